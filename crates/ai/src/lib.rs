//! The AI gateway: one OpenAI-compatible API over many LLM providers (adapters, SSE translation, token and cost accounting).
