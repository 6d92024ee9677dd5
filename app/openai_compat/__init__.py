"""OpenAI-compatible endpoints (`/v1/models`, `/v1/chat/completions`): each tenant the caller
may chat in is a model named `cairn:<tenant-slug>`."""
