"""The official `openai` and `anthropic` Python SDKs as real clients of Holdfast's AI
gateway, which routes to a mock of each provider. Every response must parse."""

import json
import os

import anthropic
import openai
import pytest

BASE = os.environ["HOLDFAST_URL"]
# Gateway model name -> provider the mock answers as.
MODELS = {
    "openai-m": "openai",
    "azure-m": "azure",
    "anthropic-m": "anthropic",
    "gemini-m": "gemini",
    "ollama-m": "ollama",
}
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                       "required": ["location"]},
    },
}]


@pytest.fixture(scope="module")
def oa():
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key="holdfast-test", max_retries=0)


@pytest.fixture(scope="module")
def an():
    return anthropic.Anthropic(base_url=BASE, api_key="holdfast-test", max_retries=0)


@pytest.mark.parametrize("model,provider", MODELS.items())
def test_openai_sdk_chat(oa, model, provider):
    r = oa.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "hi there"}],
    )
    assert r.choices[0].message.content == f"Hello from {provider}: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 7
    assert r.usage.completion_tokens == 5


@pytest.mark.parametrize("model,provider", MODELS.items())
def test_openai_sdk_stream(oa, model, provider):
    stream = oa.chat.completions.create(
        model=model,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream please"}],
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == f"Hello from {provider}: stream please"
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens == 7 and usage.completion_tokens == 5


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_tool_call(oa, model):
    r = oa.chat.completions.create(
        model=model, tools=TOOLS,
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    assert r.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_tool_call_stream(oa, model):
    stream = oa.chat.completions.create(
        model=model, tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    name, args = None, ""
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
    assert name == "get_weather"
    assert json.loads(args) == {"location": "Paris"}


def test_openai_sdk_models_embeddings_and_errors(oa):
    ids = {m.id for m in oa.models.list()}
    assert set(MODELS) | {"smart"} <= ids
    e = oa.embeddings.create(model="openai-m", input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 3
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("model,provider", MODELS.items())
def test_anthropic_sdk_messages(an, model, provider):
    m = an.messages.create(
        model=model, max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": "hi there"}],
    )
    assert m.content[0].type == "text"
    assert m.content[0].text == f"Hello from {provider}: hi there"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == 7 and m.usage.output_tokens == 5


@pytest.mark.parametrize("model,provider", MODELS.items())
def test_anthropic_sdk_stream(an, model, provider):
    with an.messages.stream(
        model=model, max_tokens=100,
        messages=[{"role": "user", "content": "stream please"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"Hello from {provider}: stream please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


@pytest.mark.parametrize("model", ["openai-m", "gemini-m"])
def test_anthropic_sdk_tool_use(an, model):
    m = an.messages.create(
        model=model, max_tokens=100,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "weather?"}],
    )
    block = next(b for b in m.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"location": "Paris"}
    assert m.stop_reason == "tool_use"


def test_openai_sdk_sees_a_broken_stream_as_an_error(oa):
    stream = oa.chat.completions.create(
        model="breaks-mid-stream", stream=True,
        messages=[{"role": "user", "content": "this stream will break"}],
    )
    text = ""
    with pytest.raises((openai.APIError, openai.APIConnectionError)) as info:
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
    # Some content arrived before the break, and the SDK did not see a normal end.
    assert text.startswith("Hello")
    # The SDK raises on the gateway's SSE `error` event, with the gateway's message.
    assert "broke the connection" in str(info.value), repr(info.value)


def test_openai_sdk_failover_is_transparent(oa):
    r = oa.chat.completions.create(
        model="failover", messages=[{"role": "user", "content": "hi"}],
    )
    assert r.choices[0].message.content == "Hello from anthropic: hi"


def test_anthropic_sdk_sees_a_broken_stream_as_an_error(an):
    with pytest.raises((anthropic.APIError, anthropic.APIConnectionError)):
        with an.messages.stream(
            model="breaks-mid-stream", max_tokens=50,
            messages=[{"role": "user", "content": "this stream will break"}],
        ) as stream:
            for _ in stream.text_stream:
                pass
