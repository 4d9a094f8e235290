"""Parked symbols: list them, and unpark one by processing the messages held for it.

A symbol is parked when one of its messages could not be processed (that message is in the
DLQ); its later messages wait in ``parked_bars`` so its bars are never applied out of order.
Unparking resumes the symbol without the bad message: the held messages are applied in
arrival order in one transaction, through the same code path as live messages.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import psycopg2.extras
from confluent_kafka import Producer

from finpipe_core import contracts
from finpipe_core.db import connection
from finpipe_core.dead_letters import DeadLetterWriter
from finpipe_core.kafka import producer_config
from finpipe_core.settings import Settings
from workers.processor.batch import BatchWriter, InputMessage, lock_symbols

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParkedSymbol:
    symbol: str
    error: str | None
    held_messages: int


def parked_symbols(settings: Settings) -> list[ParkedSymbol]:
    with connection(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT st.symbol, st.error, count(p.id) FROM symbol_state st "
            "LEFT JOIN parked_bars p USING (symbol) WHERE st.status = 'parked' "
            "GROUP BY st.symbol, st.error ORDER BY st.symbol"
        )
        return [ParkedSymbol(*row) for row in cur.fetchall()]


DeadLetterSource = tuple[str, int, int]  # (topic, partition, offset) the message came from


def unresolved_dead_letters(
    settings: Settings, sources: list[DeadLetterSource]
) -> list[DeadLetterSource]:
    """Those of ``sources`` that were neither replayed nor skipped by an unpark."""
    with connection(settings) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT source_topic, source_partition, source_offset FROM dead_letters "
                "WHERE status <> 'open'"
            )
            resolved = {tuple(row) for row in cur.fetchall()}
        return [s for s in sources if s not in resolved]


def unpark(settings: Settings, symbol: str, replayed: list[DeadLetterSource] = ()) -> int:
    """Resume ``symbol``: apply its held messages in order; return how many were applied.

    Its open dead letters are marked ``replayed`` (those in ``replayed``, just sent back by
    ``finpipe dlq replay``) or ``skipped`` (the rest), so no later replay sends them again.
    If a held message fails too, it goes to the DLQ and the symbol is parked again, with
    the messages after it held once more.
    """
    contracts.validate_symbol(symbol)
    with connection(settings) as conn:
        try:
            with conn.cursor() as cur:
                lock_symbols(cur, {symbol})  # the processors' lock first, as they take it
                _resolve_dead_letters(cur, symbol, replayed)
                cur.execute(
                    "SELECT status FROM symbol_state WHERE symbol = %s FOR UPDATE", (symbol,)
                )
                row = cur.fetchone()
                if row is None or row[0] != "parked":
                    conn.commit()  # the resolutions still count
                    return 0
                cur.execute(
                    "UPDATE symbol_state SET status = 'ok', error = NULL, "
                    "updated_at = now() WHERE symbol = %s",
                    (symbol,),
                )
                cur.execute(
                    "DELETE FROM parked_bars WHERE symbol = %s "
                    'RETURNING id, topic, partition, "offset", value',
                    (symbol,),
                )
                held = sorted(cur.fetchall())
            messages = [InputMessage(t, p, o, symbol.encode(), bytes(v)) for _, t, p, o, v in held]
            writer = BatchWriter(
                conn, settings.processor_group, settings.max_message_bytes, record_offsets=False
            )
            result = writer.apply(messages)
            if result.dead_letters:
                dlq = DeadLetterWriter(Producer(producer_config(settings)), settings.dlq_topic)
                for dead in result.dead_letters:
                    m = dead.message
                    dlq.send((m.topic, m.partition, m.offset), m.key, m.value, dead.error)
                dlq.confirm()  # nothing changed if this raises
            conn.commit()
            logger.info("symbol=%s unparked, %d held messages applied", symbol, len(messages))
            return len(messages) - len(result.dead_letters)
        except BaseException:
            conn.rollback()
            raise


def _resolve_dead_letters(cur, symbol: str, replayed: list[DeadLetterSource]) -> None:
    if replayed:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO dead_letters AS d (source_topic, source_partition, source_offset, "
            "symbol, status, resolved_at) VALUES %s ON CONFLICT (source_topic, "
            "source_partition, source_offset) DO UPDATE SET status = 'replayed', "
            "resolved_at = now()",
            [(t, p, o, symbol, "replayed", dt.datetime.now(dt.UTC)) for t, p, o in replayed],
        )
    cur.execute(
        "UPDATE dead_letters SET status = 'skipped', resolved_at = now() "
        "WHERE symbol = %s AND status = 'open'",
        (symbol,),
    )
