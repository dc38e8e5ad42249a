"""Protocol v1 validation (bridge.jobs.protocol), pure: every bad input docs/protocol.md names gets a one-line error."""

from __future__ import annotations

import json

import pytest
from bridge_helpers import job, make_wav

from bridge.jobs.protocol import (
    MAX_MESSAGE_BYTES,
    PathMap,
    ProtocolError,
    ReplyTo,
    check_source,
    decode_json,
    parse_cancel,
    parse_job,
    parse_query_args,
    parse_reply_args,
    reply_allowed,
    take_name,
    token_ok,
    valid_id,
)
from bridge.jobs.queue import JobQueue

SRC = "/abs/source.wav"


def refused(obj, **kw) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        parse_job(obj, **kw)
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return exc.value


def test_valid_job_maps_to_edit_request():
    j = parse_job(job("item-7f3a_1", SRC, source={"path": SRC, "start": 1.25, "length": 4.0}, mode="sdedit",
                      etas=[0.3, 1.0], inpaint={"start": 0.5, "end": 1.5}, seed=42, model="tiny",
                      priority="batch", reply={"host": "127.0.0.1", "port": 9051}, label="Kick 03",
                      guidance=3.0, steps={"embed": 5, "tune": 6, "sample": 7}, unknown_future_field=[1]))
    p = j.params
    assert (j.id, j.priority, j.model, j.label, j.reply.port) == ("item-7f3a_1", "batch", "tiny", "Kick 03", 9051)
    assert (p.embed_steps, p.tune_steps, p.sample_steps, p.guidance) == (5, 6, 7, 3.0)
    assert (p.mode, p.etas, p.seed, p.inpaint.start, p.inpaint.end) == ("sdedit", (0.3, 1.0), 42, 0.5, 1.5)
    assert (j.request.region.start, j.request.region.length, j.request.source) == (1.25, 4.0, SRC)


def test_defaults():
    j = parse_job({"version": 1, "id": "a", "source": {"path": SRC}, "prompt": "x", "etas": [0.5]})
    assert (j.priority, j.params.mode, j.params.seed, j.params.inpaint, j.reply) == ("interactive", "lora", 0,
                                                                                      None, None)
    assert j.request.region.start == 0.0 and j.request.region.length is None
    assert j.params.tune_steps is None and j.params.sample_steps is None


def test_whole_floats_are_integers():  # Lua JSON encoders may write 42 as 42.0
    j = parse_job(job("a", SRC, seed=42.0, steps={"embed": 3.0, "tune": 3, "sample": 4.0}))
    assert j.params.seed == 42 and isinstance(j.params.seed, int) and j.params.embed_steps == 3


@pytest.mark.parametrize("bad_id", [None, "", "x" * 65, "../etc", "a/b", "a b", "é", "a.b", 5, ["a"], "a\x00"])
def test_bad_ids_are_refused_without_id(bad_id):
    obj = job("ok", SRC)
    obj["id"] = bad_id
    if bad_id is None:
        del obj["id"]
    assert refused(obj).job_id == ""


@pytest.mark.parametrize("good_id", ["a", "A-b_9", "x" * 64])
def test_good_ids(good_id):
    assert valid_id(good_id) and parse_job(job(good_id, SRC)).id == good_id


BAD_FIELDS = [
    ({"version": None}, "version"),
    ({"version": 2}, "version"),
    ({"version": "1"}, "version"),
    ({"source": None}, "source"),
    ({"source": "/abs/x.wav"}, "source"),
    ({"source": {"path": ""}}, "source.path"),
    ({"source": {"path": 5}}, "source.path"),
    ({"source": {"path": "relative/x.wav"}}, "absolute"),
    ({"source": {"path": SRC, "start": -1}}, "start"),
    ({"source": {"path": SRC, "start": "0"}}, "source.start"),
    ({"source": {"path": SRC, "length": 0}}, "length"),
    ({"source": {"path": SRC, "length": True}}, "source.length"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 1001}, "too long"),
    ({"prompt": 5}, "prompt"),
    ({"etas": []}, "η"),
    ({"etas": 0.5}, "etas"),
    ({"etas": [0.1] * 17}, "too many"),
    ({"etas": [1.6]}, "outside"),
    ({"etas": [-0.1]}, "outside"),
    ({"etas": ["0.5"]}, "not a number"),
    ({"etas": [True]}, "not a number"),
    ({"mode": "sdedit", "etas": [0.0]}, "SDEdit"),
    ({"mode": "sdedit", "etas": [1.2]}, "outside"),
    ({"mode": "magic"}, "mode"),
    ({"mode": 1}, "mode"),
    ({"inpaint": {"start": 1.0, "end": 0.5}}, "inpaint"),
    ({"inpaint": {"start": 1.0}}, "inpaint"),
    ({"inpaint": [0, 1]}, "inpaint"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "1"}, "seed"),
    ({"model": 3}, "model"),
    ({"priority": "urgent"}, "priority"),
    ({"reply": {"host": "127.0.0.1", "port": 0}}, "reply.port"),
    ({"reply": {"host": "127.0.0.1", "port": 70000}}, "reply.port"),
    ({"reply": {"host": "127.0.0.1"}}, "reply.port"),
    ({"reply": {"host": 5, "port": 9051}}, "reply.host"),
    ({"reply": "127.0.0.1:9051"}, "reply"),
    ({"token": 5}, "token"),
    ({"label": 5}, "label"),
    ({"label": "x" * 1001}, "label"),
    ({"steps": [1, 2, 3]}, "steps"),
    ({"steps": {"embed": -1}}, "steps.embed"),
    ({"steps": {"tune": 20001}}, "steps.tune"),
    ({"steps": {"sample": 0}}, "steps.sample"),
    ({"steps": {"embed": "3"}}, "steps.embed"),
    ({"guidance": 51}, "guidance"),
    ({"guidance": "3"}, "guidance"),
]


@pytest.mark.parametrize(("fields", "word"), BAD_FIELDS, ids=[f"{next(iter(f))}-{i}" for i, (f, _)
                                                               in enumerate(BAD_FIELDS)])
def test_bad_fields_are_refused_with_the_id(fields, word):
    obj = job("j1", SRC)
    obj.update(fields)
    if obj.get("version") is None:
        obj.pop("version")
    exc = refused(obj)
    assert exc.job_id == "j1"
    assert word.lower() in str(exc).lower(), str(exc)


@pytest.mark.parametrize("missing", ["source", "prompt", "etas", "version"])
def test_missing_required_fields(missing):
    obj = job("j1", SRC)
    del obj[missing]
    assert refused(obj).job_id == "j1"


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '"job"', "null", "{'id': 1}", '{"a": NaN}', "\ud800"])
def test_undecodable_messages(text):
    with pytest.raises(ProtocolError) as exc:
        decode_json(text)
    assert exc.value.job_id == ""


def test_oversize_and_binary_messages():
    with pytest.raises(ProtocolError, match="too large"):
        decode_json(json.dumps(job("big", SRC, label="x" * MAX_MESSAGE_BYTES)))
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_json(b"\xff\xfe{}")
    with pytest.raises(ProtocolError, match="string"):
        decode_json(42)
    with pytest.raises(ProtocolError):
        decode_json("[" * 100_000)  # deep nesting must not crash the parser


def test_source_is_probed(tmp_path):
    wav = make_wav(tmp_path / "a.wav", seconds=1.0, sr=22_050, channels=1)
    info, frames = check_source(parse_job(job("a", wav, source={"path": str(wav), "start": 0.5})))
    assert (info.sample_rate, info.channels, frames) == (22_050, 1, 11_025)
    for path, word in ((tmp_path / "missing.wav", "not found"), (tmp_path, "not a file")):
        with pytest.raises(ProtocolError, match=word) as exc:
            check_source(parse_job(job("b", path)))
        assert exc.value.job_id == "b"
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(ProtocolError, match="not audio"):
        check_source(parse_job(job("c", tmp_path / "text.wav")))
    with pytest.raises(ProtocolError, match="after the end"):
        check_source(parse_job(job("d", wav, source={"path": str(wav), "start": 5.0})))
    with pytest.raises(ProtocolError, match="past the end"):
        check_source(parse_job(job("e", wav, source={"path": str(wav), "start": 0.5, "length": 2.0})))
    with pytest.raises(ProtocolError, match="outside the clip") as exc:  # region is 0.5 s long
        check_source(parse_job(job("f", wav, source={"path": str(wav), "start": 0.5},
                                   inpaint={"start": 0.2, "end": 0.9})))
    assert exc.value.job_id == "f"


def test_path_mapping():
    m = PathMap.parse(["/Users/me/Music=/srv/music", "C:\\Audio=/mnt/audio", "/Users/me=/home/me"])
    assert m.to_server("/Users/me/Music/a/b.wav") == "/srv/music/a/b.wav"
    assert m.to_server("/Users/me/Musical/x.wav") == "/home/me/Musical/x.wav"  # component boundary
    assert m.to_server("C:\\Audio\\kit\\kick.wav") == "/mnt/audio/kit/kick.wav"
    assert m.to_server("/elsewhere/x.wav") == "/elsewhere/x.wav"
    assert m.to_client("/srv/music/spool/jobs/a/takes/eta0.30.wav") == "/Users/me/Music/spool/jobs/a/takes/eta0.30.wav"
    j = parse_job(job("a", "C:\\Audio\\k.wav"), path_map=m)
    assert j.source_path == "/mnt/audio/k.wav"
    refused(job("a", "C:\\Other\\k.wav"), path_map=m)  # not absolute on this machine
    for bad in ("nothing", "=x", "x="):
        with pytest.raises(ValueError):
            PathMap.parse([bad])


def test_cancel_forms():
    assert parse_cancel(["j1"]).id == "j1"
    c = parse_cancel(["j1", "secret"])
    assert (c.id, c.token) == ("j1", "secret")
    c = parse_cancel([json.dumps({"id": "j1", "token": "t", "reply": {"host": "127.0.0.1", "port": 9}})])
    assert (c.id, c.token, c.reply.port) == ("j1", "t", 9)
    for bad in ([], ["../x"], [5], ["a", "b", "c"], ["j1", 5], ['{"id": 5}'], ["{nope"], ['{"id": "a"}', "x"],
                ['{"id": "a", "reply": {"port": -1}}']):
        with pytest.raises(ProtocolError):
            parse_cancel(bad)


def test_reply_args():
    assert parse_reply_args([]) is None
    r = parse_reply_args(["127.0.0.1", 9051])
    assert (r.host, r.port) == ("127.0.0.1", 9051)
    for bad in (["127.0.0.1"], ["127.0.0.1", "9051"], ["127.0.0.1", 0], [5, 9051], ["", 1], ["h", 1, 2]):
        with pytest.raises(ProtocolError):
            parse_reply_args(bad)
    assert parse_query_args(["tok"]) == (None, "tok")
    assert parse_query_args(["127.0.0.1", 9, "tok"]) == (ReplyTo("127.0.0.1", 9), "tok")
    for bad in ([5], ["h", 1, 2], ["127.0.0.1", "9"]):
        with pytest.raises(ProtocolError):
            parse_query_args(bad)


def test_replies_stay_on_the_senders_host():
    me = ReplyTo("127.0.0.1", 5000)
    assert reply_allowed(ReplyTo("127.0.0.1", 9), me) and reply_allowed(ReplyTo("localhost", 9), me)
    assert not reply_allowed(ReplyTo("192.0.2.7", 9), me)
    assert not reply_allowed(ReplyTo("example.org", 9), me)  # no DNS on the answering path
    assert reply_allowed(ReplyTo("192.0.2.7", 9), ReplyTo("192.0.2.7", 1))
    assert reply_allowed(ReplyTo("127.0.0.1", 9), None) and not reply_allowed(ReplyTo("192.0.2.7", 9), None)
    assert reply_allowed(ReplyTo("192.0.2.7", 9), None, trusted=True)


def test_token_compare():
    assert token_ok(None, None) and token_ok(None, "x")
    assert token_ok("s3cret", "s3cret")
    assert not token_ok("s3cret", None) and not token_ok("s3cret", "S3cret") and not token_ok("s3cret", 5)


def test_take_names_never_collide():
    used: set[str] = set()
    assert [take_name(e, used) for e in (0.3, 0.5, 0.5, 0.333, 0.334, 1.0)] == [
        "eta0.30.wav", "eta0.50.wav", "eta0.50-2.wav", "eta0.33.wav", "eta0.33-2.wav", "eta1.00.wav"]


def test_queue_priority_fifo_and_cancel():
    q = JobQueue()
    for jid, prio in (("b1", "batch"), ("i1", "interactive"), ("b2", "batch"), ("i2", "interactive")):
        q.put(jid, prio)
    assert q.order() == ["i1", "i2", "b1", "b2"]
    assert q.remove("i2") and not q.remove("i2") and not q.remove("nope")
    assert [q.get(0), q.get(0), q.get(0), q.get(0)] == ["i1", "b1", "b2", None]
    q.put("x")
    q.close()
    assert q.get(0) is None and q.order() == ["x"]
