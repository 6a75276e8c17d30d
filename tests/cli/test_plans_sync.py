"""`billingdb plans sync` against a stand-in serving GET /v1/prices with Stripe's own object shapes.

localstripe has no prices API: the stand-in pages Stripe's list object (``has_more``,
``starting_after``; at most two prices a page, so every sync reads several pages) and expands
``data.product`` as Stripe does. The price and product objects are Stripe's API fixtures, trimmed of
nothing but ids, names, amounts and metadata.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))

from api_support import Recorded, Reply, StandIn, stripe_error  # noqa: E402
from helpers import call, contents  # noqa: E402

from billingdb.cli import app  # noqa: E402

runner = CliRunner()
KEY = "sk_test_plans_standin"

# Stripe's product and price objects (API fixtures), as GET /v1/prices returns them.
PRODUCT: dict[str, Any] = {
    "id": "prod_QXg1hqf4jFNsqG", "object": "product", "active": True, "created": 1234567890,
    "default_price": None, "description": None, "images": [], "livemode": False, "marketing_features": [],
    "metadata": {}, "name": "T-shirt", "package_dimensions": None, "shippable": None,
    "statement_descriptor": None, "tax_code": None, "type": "service", "unit_label": None,
    "updated": 1234567890, "url": None,
}
PRICE: dict[str, Any] = {
    "id": "price_1PgafmB7WZ01zgkW6dKueIc5", "object": "price", "active": True, "billing_scheme": "per_unit",
    "created": 1234567890, "currency": "usd",
    "custom_unit_amount": None, "livemode": False, "lookup_key": None, "metadata": {}, "nickname": None,
    "product": "prod_QXg1hqf4jFNsqG",
    "recurring": {"interval": "month", "interval_count": 1, "meter": None, "trial_period_days": None,
                  "usage_type": "licensed"},
    "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None, "type": "recurring",
    "unit_amount": 2000, "unit_amount_decimal": "2000",
}


def product(product_id: str, name: str, **fields: Any) -> dict[str, Any]:
    return {**copy.deepcopy(PRODUCT), "id": product_id, "name": name, **fields}


def price(price_id: str, product_id: str, unit_amount: int | None = 999, interval: str | None = "month",
          **fields: Any) -> dict[str, Any]:
    body = {**copy.deepcopy(PRICE), "id": price_id, "product": product_id, "unit_amount": unit_amount,
            "unit_amount_decimal": None if unit_amount is None else str(unit_amount), **fields}
    if interval is None:
        body.update(recurring=None, type="one_time")
    else:
        body["recurring"]["interval"] = interval
    return body


class PricesStandIn(StandIn):
    """GET /v1/prices: ``prices`` in order, ``page_size`` a page, the product expanded when asked.

    ``pages[n]`` replaces the nth answer (0-based), e.g. a 401 or a malformed page.
    """

    def __init__(self, prices: list[dict[str, Any]], products: list[dict[str, Any]], page_size: int = 2) -> None:
        self.prices, self.page_size = prices, page_size
        self.products = {p["id"]: p for p in products}
        self.pages: dict[int, Reply] = {}
        super().__init__(self._answer)

    def _answer(self, rec: Recorded) -> Reply:
        url = urlsplit(rec.path)
        if rec.method != "GET" or url.path != "/v1/prices":
            return stripe_error(404, f"Unrecognized request URL ({url.path})", "invalid_request_error")
        n = len(self.requests) - 1
        if n in self.pages:
            return self.pages[n]
        query = parse_qsl(url.query)
        params = dict(query)
        expand = any(k.startswith("expand") and v == "data.product" for k, v in query)
        limit = min(int(params.get("limit", 10)), self.page_size)
        ids = [p["id"] for p in self.prices]
        start = ids.index(params["starting_after"]) + 1 if "starting_after" in params else 0
        page = [copy.deepcopy(p) for p in self.prices[start:start + limit]]
        if expand:
            for p in page:
                p["product"] = copy.deepcopy(self.products[p["product"]])
        return 200, {"object": "list", "data": page, "has_more": start + limit < len(ids), "url": "/v1/prices"}

    def price(self, price_id: str) -> dict[str, Any]:
        return next(p for p in self.prices if p["id"] == price_id)


def catalog() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Three credit plans (credits on the product, on the price, a yearly price with its policies),
    a one-time price and a recurring price without credits (neither is a plan)."""
    products = [
        product("prod_individual", "Individual"),
        product("prod_team", "Team", metadata={"credits": "200"}),
        product("prod_pack", "Credit pack", metadata={"credits": "50"}),
        product("prod_support", "Support"),
    ]
    prices = [
        price("price_individual", "prod_individual", 999, metadata={"credits": "30"}),
        price("price_team", "prod_team", 2999),
        price("price_individual_yearly", "prod_individual", 9990, "year",
              metadata={"credits": "400", "reset_each_period": "true", "change_credits": "full"}),
        price("price_pack", "prod_pack", 500, None),
        price("price_support", "prod_support", 4900),
    ]
    return prices, products


@pytest.fixture
def stripe_prices() -> Any:
    with PricesStandIn(*catalog()) as standin:
        yield standin


def sync(standin: StandIn, database_url: str, *args: str) -> Any:
    return runner.invoke(app, ["plans", "sync", "--api-key", KEY, "--api-base", standin.url,
                               "--database-url", database_url, *args])


def plans(conn: Any) -> dict[str, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM billingdb.plans ORDER BY price_id").fetchall()
    return {r["price_id"]: r for r in rows}


def terms(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["name"], row["credits_per_period"], row["amount_cents"], row["currency"], row["billing_interval"],
            row["reset_each_period"], row["change_credits"], row["active"])


def test_sync_creates_the_plans_of_recurring_prices_with_credits(
    stripe_prices: PricesStandIn, database_url: str, conn: Any,
) -> None:
    result = sync(stripe_prices, database_url)
    assert result.exit_code == 0, result.output
    assert {k: terms(v) for k, v in plans(conn).items()} == {
        "price_individual": ("Individual", 30, 999, "usd", "month", False, "difference", True),
        "price_individual_yearly": ("Individual", 400, 9990, "usd", "year", True, "full", True),
        "price_team": ("Team", 200, 2999, "usd", "month", False, "difference", True),
    }
    assert "5 Stripe prices: 3 created, 0 updated, 0 deactivated, 0 unchanged, 0 skipped" in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["price_team"] == ("price_team                     Team               200  create      "
                                   "new: 29.99 usd per month")
    # Three pages of two, each after the last id of the one before, the product expanded.
    queries = [dict(parse_qsl(urlsplit(r.path).query)) for r in stripe_prices.requests]
    assert [q.get("starting_after") for q in queries] == [None, "price_team", "price_pack"]
    assert all(q["limit"] == "100" and "data.product" in q.values() for q in queries)


def test_a_second_sync_changes_nothing(stripe_prices: PricesStandIn, database_url: str, conn: Any) -> None:
    assert sync(stripe_prices, database_url).exit_code == 0
    before = contents(conn)
    updated = {k: v["updated_at"] for k, v in plans(conn).items()}
    again = sync(stripe_prices, database_url)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines() == [
        "5 Stripe prices: 0 created, 0 updated, 0 deactivated, 3 unchanged, 0 skipped"]
    assert contents(conn) == before
    assert {k: v["updated_at"] for k, v in plans(conn).items()} == updated


def test_changed_and_inactive_prices_update_and_deactivate_never_delete(
    stripe_prices: PricesStandIn, database_url: str, conn: Any,
) -> None:
    # A plan set by hand for a price without credits metadata, and one for a price Stripe does not list.
    call(conn, "set_plan", "price_support", "Support", 5)
    call(conn, "set_plan", "price_elsewhere", "Elsewhere", 7)
    assert sync(stripe_prices, database_url).exit_code == 0
    # Policies set by hand are kept when the metadata says nothing of them.
    call(conn, "set_plan", "price_team", "Team", 200, reset_each_period=True, amount_cents=2999, currency="usd",
         billing_interval="month", change_credits="none")
    stripe_prices.price("price_team")["metadata"] = {"credits": "250"}  # the price's credits win
    stripe_prices.products["prod_team"]["name"] = "Teams"
    stripe_prices.price("price_individual")["active"] = False
    stripe_prices.products["prod_individual"]["active"] = False  # archived: its yearly price too

    result = sync(stripe_prices, database_url)
    assert result.exit_code == 0, result.output
    rows = plans(conn)
    assert terms(rows["price_team"]) == ("Teams", 250, 2999, "usd", "month", True, "none", True)
    assert terms(rows["price_individual"])[-1] is False and terms(rows["price_individual_yearly"])[-1] is False
    assert terms(rows["price_support"]) == ("Support", 5, None, None, None, False, "difference", True)
    assert terms(rows["price_elsewhere"])[-1] is True
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["price_team"].endswith("250  update      name Team -> Teams, credits_per_period 200 -> 250")
    assert lines["price_individual"].endswith("30  deactivate  no longer active in Stripe")
    assert "price_support" not in lines and "price_elsewhere" not in lines
    assert result.output.splitlines()[-1] == (
        "5 Stripe prices: 0 created, 1 updated, 2 deactivated, 0 unchanged, 0 skipped")

    # Offered again: active again.
    stripe_prices.price("price_individual")["active"] = True
    stripe_prices.products["prod_individual"]["active"] = True
    again = sync(stripe_prices, database_url)
    assert "active no -> yes" in again.output and "0 created, 2 updated" in again.output
    assert plans(conn)["price_individual"]["active"] is True


def test_dry_run_shows_the_changes_and_writes_nothing(
    stripe_prices: PricesStandIn, database_url: str, conn: Any,
) -> None:
    before = contents(conn)
    result = sync(stripe_prices, database_url, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("  create  ") == 3
    assert result.output.splitlines()[-1] == ("5 Stripe prices: 3 to create, 0 to update, 0 to deactivate, "
                                              "0 unchanged, 0 skipped; dry run, nothing written")
    assert contents(conn) == before
    listed = json.loads(sync(stripe_prices, database_url, "--dry-run", "--json").output)
    assert listed["counts"] == {"create": 3, "update": 0, "deactivate": 0, "unchanged": 0, "skipped": 0}
    assert contents(conn) == before


def test_bad_credits_metadata_is_skipped_and_reported_the_rest_applied(database_url: str, conn: Any) -> None:
    bad = ["abc", "-5", "0", "3000000000", "1000001", "12.5", ""]
    prices = [price(f"price_bad{i}", "prod_bad", metadata={"credits": value}) for i, value in enumerate(bad)]
    prices.append(price("price_good", "prod_good", metadata={"credits": "10"}))
    prices.append(price("price_badpolicy", "prod_good", metadata={"credits": "10", "change_credits": "all"}))
    with PricesStandIn(prices, [product("prod_bad", "Bad"), product("prod_good", "Good")], page_size=3) as standin:
        result = sync(standin, database_url, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [c["price_id"] for c in report["changes"]] == ["price_good"]
    assert {s["price_id"]: s["reason"] for s in report["skipped"]} == {
        "price_bad0": "credits metadata 'abc' is not a positive integer",
        "price_bad1": "credits metadata '-5' is not a positive integer",
        "price_bad2": "credits metadata '0' is not a positive integer",
        "price_bad3": "credits metadata '3000000000' is above 1000000; a larger plan is for billingdb plans set",
        "price_bad4": "credits metadata '1000001' is above 1000000; a larger plan is for billingdb plans set",
        "price_bad5": "credits metadata '12.5' is not a positive integer",
        "price_bad6": "credits metadata '' is not a positive integer",
        "price_badpolicy": "change_credits metadata 'all' is not difference, full or none",
    }
    assert list(plans(conn)) == ["price_good"]


def test_a_refused_key_is_one_line_and_exit_2_nothing_written(
    stripe_prices: PricesStandIn, database_url: str, conn: Any,
) -> None:
    stripe_prices.pages[0] = stripe_error(401, "Invalid API Key provided: sk_test_****dbin", "invalid_request_error")
    before = contents(conn)
    env = {k: v for k, v in os.environ.items() if k not in ("STRIPE_SECRET_KEY", "DATABASE_URL")}
    done = subprocess.run([sys.executable, "-m", "billingdb", "plans", "sync", "--api-key", KEY, "--api-base",
                           stripe_prices.url, "--database-url", database_url],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: Stripe refused the API key (401): Invalid API Key provided: sk_test_****dbin; "
        "check STRIPE_SECRET_KEY or --api-key"]
    assert contents(conn) == before


@pytest.mark.parametrize("reply", [
    (200, b"<html>upstream proxy error</html>"),
    (200, {"object": "list", "data": {"id": "price_x"}, "has_more": False, "url": "/v1/prices"}),
    (200, {"object": "list", "data": [], "has_more": True, "url": "/v1/prices"}),
    (200, {"object": "list", "data": [], "has_more": "no", "url": "/v1/prices"}),
    (200, {"object": "list", "data": [{"id": "price_x", "object": "price"}], "has_more": False,
           "url": "/v1/prices"}),
    (200, {"error": "no list here"}),
], ids=["not-json", "data-not-a-list", "has-more-but-empty", "has-more-not-a-boolean", "not-a-price",
        "not-a-list"])
def test_a_malformed_page_is_exit_2_and_nothing_written(
    stripe_prices: PricesStandIn, database_url: str, conn: Any, reply: Reply,
) -> None:
    stripe_prices.pages[1] = reply  # the first page is fine: its prices are not written either
    before = contents(conn)
    result = sync(stripe_prices, database_url)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert contents(conn) == before


def test_no_key_is_exit_2_before_any_request(stripe_prices: PricesStandIn, database_url: str, conn: Any) -> None:
    before = contents(conn)
    result = runner.invoke(app, ["plans", "sync", "--api-base", stripe_prices.url, "--database-url", database_url],
                           env={"STRIPE_SECRET_KEY": None})
    assert result.exit_code == 2
    assert result.stderr == "error: no Stripe API key: pass --api-key or set STRIPE_SECRET_KEY\n"
    assert stripe_prices.requests == [] and contents(conn) == before


def test_zero_decimal_currencies_are_shown_in_their_unit(database_url: str, conn: Any) -> None:
    prices = [price("price_yen", "prod_yen", 500, metadata={"credits": "10"}, currency="jpy"),
              price("price_krw", "prod_yen", 9900, "year", metadata={"credits": "10"}, currency="krw"),
              price("price_usd", "prod_yen", 500, metadata={"credits": "10"})]
    with PricesStandIn(prices, [product("prod_yen", "Yen")]) as standin:
        result = sync(standin, database_url)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["price_yen"].endswith("new: 500 jpy per month")
    assert lines["price_krw"].endswith("new: 9900 krw per year")
    assert lines["price_usd"].endswith("new: 5.00 usd per month")
    listed = runner.invoke(app, ["plans", "list", "--database-url", database_url])
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split() for line in listed.output.splitlines()[1:]}
    assert rows["price_yen"][3:5] == ["500", "jpy"] and rows["price_krw"][3:5] == ["9900", "krw"]
    assert rows["price_usd"][3:5] == ["5.00", "usd"]


def test_a_price_billed_every_n_periods_is_skipped_with_its_reason(database_url: str, conn: Any) -> None:
    quarterly = price("price_quarterly", "prod_q", 2700, metadata={"credits": "90"})
    quarterly["recurring"]["interval_count"] = 3
    prices = [quarterly, price("price_monthly", "prod_q", 999, metadata={"credits": "30"})]
    with PricesStandIn(prices, [product("prod_q", "Quarterly")]) as standin:
        result = sync(standin, database_url)
    assert result.exit_code == 1, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["price_quarterly"].endswith(
        "skip        recurring.interval_count 3 (every 3 months): a plan stores one month, no count")
    assert list(plans(conn)) == ["price_monthly"]
    assert result.output.splitlines()[-1] == (
        "2 Stripe prices: 1 created, 0 updated, 0 deactivated, 0 unchanged, 1 skipped")
