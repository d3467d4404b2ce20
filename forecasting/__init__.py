"""Features, torch ensemble models, training, uncertainty and the model registry."""
