import numpy as np

from fedlada.federation.channel import Channel
from fedlada.federation.messages import Arrays, Evaluate, Report, TeacherPaths, decode, encode


def test_round_trip_text_unicode_empty_and_arrays():
    msgs = [
        TeacherPaths(3, ["a", "b"], ["12+3=", "çà 日本\n"], ["2+3+0=05|#### 15", ""], [True, False]),
        TeacherPaths(1, [], [], [], []),
        Report({"x": 1.5, "y": -2.0}),
        Arrays(2, {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "i": np.array([1, 2], dtype=np.int64)}, {"s": 0.5}),
        Evaluate(0),
    ]
    for msg in msgs:
        back = decode(encode(msg))
        assert type(back) is type(msg)
        if isinstance(msg, Arrays):
            assert back.round == msg.round and back.values == msg.values
            for k in msg.arrays:
                np.testing.assert_array_equal(back.arrays[k], msg.arrays[k])
                assert back.arrays[k].dtype == msg.arrays[k].dtype
        else:
            assert back == msg


class Echo:
    name = "client-0"

    def __init__(self):
        self.seen = None

    def handle(self, msg):
        self.seen = msg
        msg.prompts.append("mutated")  # must not leak back into the sender's object
        return Report({"n": float(len(msg.prompts))})


def test_channel_counts_bytes_and_isolates_objects():
    echo = Echo()
    ch = Channel([echo])
    request = TeacherPaths(1, ["a"], ["1+1="], ["1+1+0=02|#### 2"], [True])
    reply = ch.call(0, request)
    assert request.prompts == ["1+1="]  # the receiver got a copy
    assert reply == Report({"n": 2.0})
    sent, received = ch.take_counts()
    assert sent["server"] == len(encode(request)) == received["client-0"]
    assert sent["client-0"] == len(encode(reply)) == received["server"]
    assert ch.take_counts() == ({}, {})
