

mod amqp;
mod shop;
