"""Model cards: one renderer (`template.render_model_card`, huggingface_hub's `ModelCard`) for
trained, fine-tuned, converted and released checkpoints. Import from `lastvit.cards.model_card`."""
