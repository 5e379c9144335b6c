"""The caption step: a text for every clip, from a vision-language model or from metadata."""
