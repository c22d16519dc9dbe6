"""MAGVIT-v2 image tokenizer (Show-o): modeling, image preprocessing and the torch parameter mapping."""
