"""Model cards: one renderer (huggingface_hub's `ModelCard`) for trained, fine-tuned, converted
and released checkpoints."""
