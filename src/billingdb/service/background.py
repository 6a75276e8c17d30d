"""``billingdb serve --sync-events-every 15m``: ``stripe sync-events`` in the background.

Off by default. When on, a thread of the service runs one sync (:func:`billingdb.event_sync.sync_events`,
from the cursor) shortly after start-up and then every period, on a connection of its own (the sync's
session lock goes with it). Never two at once, across processes and hosts: a run that finds another
sync holding the lock (another ``serve``, a cron job, an operator) skips its turn, and so does one
that finds the last run started less than the period ago, so ``--workers N`` syncs once a period,
not N times. A failed run is
logged and recorded in the database (``billingdb health`` shows the last run); the next one tries
again. The service's requests never wait for it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

import stripe

from billingdb import db, event_sync
from billingdb.errors import BillingError
from billingdb.stripe_api import StripeConfig, describe_error

__all__ = ["EventSyncSettings", "EventSyncJob"]

log = logging.getLogger("billingdb.service.event_sync")


@dataclass(frozen=True)
class EventSyncSettings:
    """Sync Stripe's Events API every ``every``, with this key and API address."""

    stripe: StripeConfig
    every: timedelta
    first_after: timedelta = timedelta(seconds=5)


class EventSyncJob:
    """The background thread: ``start()`` at start-up, ``stop()`` at shutdown."""

    def __init__(self, database_url: str, settings: EventSyncSettings) -> None:
        self.database_url = database_url
        self.settings = settings
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="billingdb-event-sync", daemon=True)

    @property
    def due_after(self) -> timedelta:
        """A run is skipped when the last one (of any worker or host) started less than this long ago:
        N workers keep one schedule, not N. Nine tenths of the period, so that timer jitter does not
        skip the worker whose turn it is."""
        return self.settings.every * 0.9

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        wait = self.settings.first_after
        while not self._stop.wait(wait.total_seconds()):
            self.run_once()
            wait = self.settings.every

    def run_once(self) -> event_sync.SyncReport | None:
        """One sync; None when it was skipped or failed (logged, and recorded when it got that far)."""
        self.runs += 1
        try:
            with db.connect(self.database_url) as conn:
                report = event_sync.sync_events(conn, self.settings.stripe.client(), not_within=self.due_after)
        except event_sync.SyncBusy:
            log.info("stripe sync-events: skipped, another sync is running")
            return None
        except event_sync.SyncNotDue as exc:
            log.debug("stripe sync-events: not due: %s", exc)
            return None
        except stripe.StripeError as exc:
            log.error("stripe sync-events failed: %s", describe_error(exc))
            return None
        except BillingError as exc:
            log.error("stripe sync-events failed: %s", exc)
            return None
        except Exception:  # the service goes on; the next run tries again
            log.exception("stripe sync-events failed")
            return None
        outcomes = ", ".join(f"{n} {status}" for status, n in report.outcomes.most_common()) or "nothing new"
        log.info("stripe sync-events: %d events since %s: %s", report.fetched, report.since.isoformat(), outcomes)
        return report
