//! Local fake LLM providers that speak each provider's real wire format and fail on request.
