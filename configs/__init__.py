"""ml_collections get_config() files (big_vision style): model, tokenizer-network and stage configs."""
