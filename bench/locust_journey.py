"""Locust's side of the journey benchmark (bench/flows.py): a SequentialTaskSet of the same five steps as
bench/flows.py's ``JOURNEY``, under FastHttpUser, no wait (closed loop), against its nginx locations.

Each journey starts with an empty cookie jar (as each of our flow instances has its own); the user comes from
the same 100 users in order. Bodies are parsed with ``json.loads`` of the raw bytes and checked on the bytes
(cheaper than ``response.json()`` and ``.text``, which guess the encoding): Locust at its fastest.
"""

import itertools
import json
from typing import Any, ClassVar

from locust import SequentialTaskSet, constant, task
from locust.contrib.fasthttp import FastHttpUser

USERS = itertools.cycle([(f"user{i}", f"pw{i}") for i in range(1, 101)])
JSON = {"content-type": "application/json"}


class Journey(SequentialTaskSet):
    token = ""
    item = 0
    sid = ""
    page = ""
    cart = ""

    @task
    def login(self) -> None:
        self.client.cookiejar.clear()
        user, password = next(USERS)
        body = f'{{"user": "{user}", "password": "{password}"}}'
        with self.client.post("/login", data=body, headers=JSON, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            doc = json.loads(r.content)
            self.token = doc["token"]
            self.item = doc["items"][0]["id"]
        self.sid = next(c.value for c in self.client.cookiejar if c.name == "session")

    @task
    def items(self) -> None:
        r = self.client.get("/items", headers={"x-session": self.sid})
        self.page = r.headers.get("x-page", "") if r.headers else ""

    @task
    def item_page(self) -> None:
        self.client.get(
            f"/items/{self.item}", headers={"authorization": f"Bearer {self.token}"}, name="/items/N"
        )

    @task
    def add_to_cart(self) -> None:
        body = f'{{"item": {self.item}, "page": "{self.page}"}}'
        r = self.client.post("/cart", data=body, headers=JSON)
        if r.status_code == 200:
            self.cart = json.loads(r.content)["cart"]

    @task
    def checkout(self) -> None:
        body = f'{{"cart": "{self.cart}"}}'
        with self.client.post("/checkout", data=body, headers=JSON, catch_response=True) as r:
            if b"done" not in (r.content or b""):
                r.failure("no 'done' in the body")


class Shopper(FastHttpUser):
    wait_time = constant(0)
    tasks: ClassVar[list[Any]] = [Journey]
