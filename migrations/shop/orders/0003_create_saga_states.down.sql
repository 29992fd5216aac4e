DROP TABLE saga_states;
