"""Locust's fastest user class against the bench target: no wait between requests (closed loop)."""

from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser


class Hammer(FastHttpUser):
    wait_time = constant(0)

    @task
    def home(self) -> None:
        self.client.get("/")
