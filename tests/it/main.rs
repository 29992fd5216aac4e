

mod amqp;
