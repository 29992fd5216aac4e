mod amqp;
mod shop;
