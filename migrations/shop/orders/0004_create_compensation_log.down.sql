DROP TABLE compensation_log;
