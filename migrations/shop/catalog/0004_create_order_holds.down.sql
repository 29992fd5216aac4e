DROP TABLE order_holds;
