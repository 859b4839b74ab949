"""The OpenAI batch workflow against qwen3q's HTTP API, with the official `openai` package.

Run by tests/api.rs (the real worker, the real llama.cpp, the tiny model):

    python batch_flow.py BASE_URL KEY NIGHT.jsonl SLOW.jsonl

Uploads NIGHT.jsonl, makes a batch of it, polls it to `completed`, downloads its output and
error files and parses every line with the package's own types; makes a batch of SLOW.jsonl,
asks chat completions (plain, streamed, with a stop string, with a JSON schema) while it runs,
cancels it once two of its requests are done, and downloads its partial output; checks that a
wrong key is refused (401) and that an upload over 50,000 lines is refused (413). Prints one
JSON object with what it saw; any failed check raises (exit 1).
"""

import json
import sys
import time

import openai
from openai.types import Batch, BatchError, FileObject
from openai.types.chat import ChatCompletion, ChatCompletionChunk

TIMEOUT_S = 120


def poll(client, batch_id, done, what):
    """Poll the batch until `done(batch)`; the batch, validated by the package's type."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        batch = client.batches.retrieve(batch_id)
        assert isinstance(batch, Batch)
        # Every field the package reads, validated by its own model.
        Batch.model_validate(batch.model_dump())
        if done(batch):
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: timed out; last seen {batch.model_dump_json()}")
        time.sleep(0.05)


def lines_of(client, file_id):
    """A file's JSON lines, downloaded through the Files API."""
    content = client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines() if line.strip()]


def check_output(lines):
    """Each output line's body is a ChatCompletion by the package's type; the answers by id."""
    answers = {}
    for line in lines:
        assert line["error"] is None, line
        assert line["response"]["status_code"] == 200, line
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.object == "chat.completion"
        choice = completion.choices[0]
        assert choice.finish_reason in ("stop", "length"), choice
        assert completion.usage.total_tokens == (
            completion.usage.prompt_tokens + completion.usage.completion_tokens
        )
        answers[line["custom_id"]] = choice.message.content
    return answers


def check_errors(lines):
    """Each error line's error is a BatchError by the package's type; their codes by id."""
    codes = {}
    for line in lines:
        assert line["response"] is None, line
        error = BatchError.model_validate(line["error"])
        codes[line["custom_id"]] = error.code
    return codes


QUESTION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour and say why you like it."},
]


def check_completion(completion):
    """A live chat's answer, held to the package's type; its one choice."""
    assert isinstance(completion, ChatCompletion), completion
    ChatCompletion.model_validate(completion.model_dump())
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "tiny", completion
    assert len(completion.choices) == 1, completion
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    return completion.choices[0]


def chats(client):
    """Chat completions while a batch runs on the same model: each takes the batch's slot (its
    request starts again later from its checkpoint). What was answered, for the caller."""
    seen = {}
    ask = dict(model="tiny", messages=QUESTION, max_tokens=24, temperature=0, seed=7)

    # Plain: the whole answer at once.
    plain = check_completion(client.chat.completions.create(**ask))
    assert plain.finish_reason in ("stop", "length"), plain
    assert plain.message.role == "assistant" and plain.message.content, plain
    seen["plain"] = plain.message.content

    # Streamed: server-sent chunks that add up to the same answer, then the usage chunk.
    pieces, finish, usage, roles = [], None, None, []
    for chunk in client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}
    ):
        assert isinstance(chunk, ChatCompletionChunk), chunk
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            assert chunk.choices == [], chunk
            usage = chunk.usage
            continue
        assert finish is None, f"a chunk after the finish: {chunk}"
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            pieces.append(delta.content)
        finish = chunk.choices[0].finish_reason
    assert roles == ["assistant"], roles
    assert finish == plain.finish_reason, finish
    assert usage is not None and usage.completion_tokens > 0, usage
    assert "".join(pieces) == plain.message.content, (pieces, plain.message.content)
    seen["streamed_chunks"] = len(pieces)

    # A stop string: the answer ends before it, and never holds it.
    stop = plain.message.content.strip()[2:4]
    assert stop, plain.message.content
    stopped = check_completion(client.chat.completions.create(**ask, stop=[stop]))
    assert stopped.finish_reason == "stop", stopped
    assert stop not in stopped.message.content, stopped
    assert plain.message.content.startswith(stopped.message.content), stopped
    seen["stopped"] = stopped.message.content

    # A JSON schema: the answer parses and holds to it.
    schema = {
        "type": "object",
        "properties": {"liked": {"type": "boolean"}, "colour": {"type": "string", "maxLength": 12}},
        "required": ["liked", "colour"],
        "additionalProperties": False,
    }
    shaped = check_completion(
        client.chat.completions.create(
            **{**ask, "max_tokens": 160},
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "colour", "schema": schema, "strict": True},
            },
        )
    )
    assert shaped.finish_reason == "stop", shaped
    value = json.loads(shaped.message.content)
    assert set(value) == {"liked", "colour"} and isinstance(value["liked"], bool), value
    assert isinstance(value["colour"], str) and len(value["colour"]) <= 12, value
    seen["json"] = value

    # What cannot be served is refused in OpenAI's shapes.
    try:
        client.chat.completions.create(**{**ask, "model": "no-such-model"})
        raise AssertionError("a chat on an unknown model was taken")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e
    try:
        client.chat.completions.create(**ask, n=2)
        raise AssertionError("a chat asking n=2 was taken")
    except openai.BadRequestError as e:
        seen["n2"] = e.status_code
    return seen


def main():
    base_url, key, night, slow = sys.argv[1:5]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    seen = {}

    # The models the registry holds.
    seen["models"] = [m.id for m in client.models.list()]

    # A night's batch: upload, create, poll to completed, download, parse.
    with open(night, "rb") as f:
        upload = client.files.create(file=f, purpose="batch")
    assert isinstance(upload, FileObject) and upload.purpose == "batch", upload
    FileObject.model_validate(upload.model_dump())
    assert client.files.retrieve(upload.id).bytes == upload.bytes
    assert upload.id in [f.id for f in client.files.list()]
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "night"},
    )
    assert batch.metadata == {"run": "night"}, batch
    batch = poll(client, batch.id, lambda b: b.status == "completed", "the night batch")
    counts = batch.request_counts
    assert counts.completed + counts.failed == counts.total, batch
    assert batch.output_file_id and batch.completed_at, batch
    seen["night"] = {
        "id": batch.id,
        "status": batch.status,
        "counts": batch.request_counts.model_dump(),
        "answers": check_output(lines_of(client, batch.output_file_id)),
        "errors": check_errors(lines_of(client, batch.error_file_id)) if batch.error_file_id else {},
    }
    assert batch.id in [b.id for b in client.batches.list()]

    # A second batch, cancelled midway: its finished requests stay, the rest are cancelled.
    with open(slow, "rb") as f:
        upload = client.files.create(file=f, purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    poll(client, batch.id, lambda b: b.request_counts.completed >= 1, "one done")
    seen["chats"] = chats(client)
    poll(client, batch.id, lambda b: b.request_counts.completed >= 2, "two done")
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled"), cancelled
    batch = poll(client, batch.id, lambda b: b.status == "cancelled", "the cancel")
    assert batch.cancelled_at is not None, batch
    seen["slow"] = {
        "id": batch.id,
        "counts": batch.request_counts.model_dump(),
        "answers": check_output(lines_of(client, batch.output_file_id)),
        "errors": check_errors(lines_of(client, batch.error_file_id)),
    }

    # A wrong key: 401, in OpenAI's shape.
    try:
        openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was let in")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key", e
        seen["wrong_key"] = e.status_code

    # An upload over OpenAI's 50,000 lines: 413, and nothing kept.
    before = len(list(client.files.list()))
    line = json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": "x"}]}})
    big = ("\n".join([line] * 50_001) + "\n").encode()
    try:
        client.files.create(file=("big.jsonl", big), purpose="batch")
        raise AssertionError("an upload of 50,001 lines was taken")
    except openai.APIStatusError as e:
        assert e.status_code == 413, e
        seen["too_large"] = e.status_code
    assert len(list(client.files.list())) == before

    # A file deleted is gone.
    gone = client.files.delete(upload.id)
    assert gone.deleted, gone
    try:
        client.files.retrieve(upload.id)
        raise AssertionError("a deleted file is still there")
    except openai.NotFoundError:
        pass

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
