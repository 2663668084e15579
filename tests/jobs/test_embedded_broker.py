"""The embedded broker: a worker polling the queue folder never takes a message before it is
whole (kombu's own filesystem channel lets it read some empty, under concurrent senders)."""

import multiprocessing
import time
from pathlib import Path

from kombu import Connection, Producer, Queue

from storeroom.jobs.celery_app import EMBEDDED_TRANSPORT

MESSAGES_PER_SENDER = 500
SENDERS = 2


def _options(root: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "control_folder": str(root / "control"),
        "store_processed": True,
        "processed_folder": str(root / "processed"),
        "polling_interval": 0,
    }


def _send(root: Path) -> None:
    queue = Queue("race", routing_key="race")
    with Connection(
        "filesystem://localhost/", transport=EMBEDDED_TRANSPORT, transport_options=_options(root)
    ) as connection:
        producer = Producer(connection.default_channel)
        for n in range(MESSAGES_PER_SENDER):
            producer.publish(
                {"n": n, "padding": "x" * 2000},
                exchange=queue.exchange,
                routing_key="race",
                declare=[queue],
            )


def test_a_reader_polling_without_pause_gets_every_message_whole(tmp_path: Path) -> None:
    for folder in ("queue", "control", "processed"):
        (tmp_path / folder).mkdir()
    queue = Queue("race", routing_key="race")
    received, unreadable = 0, []
    with Connection(
        "filesystem://localhost/",
        transport=EMBEDDED_TRANSPORT,
        transport_options=_options(tmp_path),
    ) as connection:
        channel = connection.default_channel
        queue(channel).declare()
        senders = [multiprocessing.Process(target=_send, args=(tmp_path,)) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 60
        while received + len(unreadable) < SENDERS * MESSAGES_PER_SENDER:
            assert time.monotonic() < deadline, f"{received} received"
            try:
                if channel.basic_get("race", no_ack=True) is not None:
                    received += 1
            except ValueError as exc:  # an empty or partial file: not JSON
                unreadable.append(exc)
        for sender in senders:
            sender.join()
    assert unreadable == []
    assert received == SENDERS * MESSAGES_PER_SENDER
