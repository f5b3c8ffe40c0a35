//! Scripted LLM server (Anthropic Messages API and OpenAI chat completions).
