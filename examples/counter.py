"""A first zeroserve program: actors on an embedded local cluster.

Run it with `make run` (or `python examples/counter.py`). It starts a local cluster,
creates a stateful Counter actor and an async Greeter, calls them sequentially and
concurrently, shows a remote exception, and tears everything down on exit.
"""

import asyncio
import time

import actors


@actors.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def fail(self) -> None:
        raise ValueError("counters do not go backwards")


@actors.remote
class Greeter:
    async def greet(self, name: str) -> str:
        await asyncio.sleep(0.01)  # many greetings wait concurrently on one actor
        return f"hello, {name}"


def main() -> None:
    actors.init()
    counter = Counter.options(name="counter").remote(start=10)
    print("incr ->", actors.get(counter.incr.remote(5)))

    n = 2000
    t0 = time.perf_counter()
    values = actors.get([counter.incr.remote() for _ in range(n)])
    dt = time.perf_counter() - t0
    print(f"{n} pipelined calls in {dt * 1000:.0f} ms ({n / dt:,.0f} calls/s); last value {values[-1]}")

    greeter = Greeter.remote()
    t0 = time.perf_counter()
    greetings = actors.get([greeter.greet.remote(f"user{i}") for i in range(200)])
    print(f"200 concurrent greetings in {(time.perf_counter() - t0) * 1000:.0f} ms: {greetings[0]!r} ...")

    try:
        actors.get(counter.fail.remote())
    except ValueError as e:
        print("remote error arrived as ValueError:", str(e).splitlines()[0])

    same = actors.get_actor("counter")
    print("named actor lookup ->", actors.get(same.incr.remote(0)))
    print("cluster:", actors.cluster_resources())
    actors.shutdown()


if __name__ == "__main__":
    main()
