"""An optimistic update with a mutation, step by step, as an observer of the list sees it.

``on_mutate`` cancels fetches of the list in flight (their answer predates
the change and would overwrite it), keeps the list as it was, and shows the
new todo at once; ``on_error`` puts the old list back; ``on_settled``
invalidates the list, so the observed key refetches the server's truth.
The first mutation succeeds, the second is refused by the server.  Run::

    python examples/optimistic_update.py
"""

from __future__ import annotations

import trio

import stackquery as sq

TODOS = ("todos",)
server: list[str] = ["buy milk"]  # the server's database


async def fetch_todos() -> list[str]:
    await trio.sleep(0.05)  # the network
    return list(server)


async def add_todo(title: str) -> list[str]:
    await trio.sleep(0.05)
    if title in server:
        raise ValueError(f"the server already has {title!r}")
    server.append(title)
    return list(server)


def show(state: sq.QueryState[list[str]]) -> None:
    print(f"  observer: {state.status.value} {state.data}")


async def refetched(client: sq.QueryClient, todos: sq.QueryOptions[list[str]]) -> None:
    """Wait until the list has been refetched since its invalidation."""
    # notify_on="all": also told of fetch status changes, not only of new data.
    async with client.watch(todos, notify_on="all").updates() as states:
        async for state in states:
            if not state.is_invalidated and state.fetch_status is sq.FetchStatus.IDLE:
                return


async def main() -> None:
    async with sq.open_query_client(sq.QueryClientConfig(retry=0)) as client:
        todos: sq.QueryOptions[list[str]] = sq.QueryOptions(
            query_key=TODOS, query_fn=fetch_todos, stale_time=60.0
        )

        async def on_mutate(title: str) -> list[str] | None:
            cancelled = await client.cancel_queries(TODOS)
            previous: list[str] | None = client.get_query_data(TODOS)
            print(f"  on_mutate: fetches cancelled: {cancelled}; kept {previous}")
            await client.set_query_data(TODOS, lambda old: [*old, f"{title} (saving)"])
            return previous

        async def on_error(error: BaseException, title: str, previous: list[str] | None) -> None:
            print(f"  on_error: {error}; rolling back")
            await client.set_query_data(TODOS, previous)

        async def on_settled(
            data: list[str] | None, error: BaseException | None, title: str, context: object
        ) -> None:
            print("  on_settled: invalidating the list")
            await client.invalidate_queries(TODOS)

        add = client.mutation(
            sq.MutationOptions(
                mutation_fn=add_todo, on_mutate=on_mutate, on_error=on_error, on_settled=on_settled
            )
        )
        add.subscribe(lambda state: print(f"  mutation: {state.status.value}"))

        print("1. an observer subscribes to the list")
        observer = client.watch(todos)
        observer.subscribe(show)
        await client.fetch_query(todos)  # joins the observer's fetch

        print("2. a refetch is in flight when we add 'write docs'")
        await client.invalidate_queries(TODOS)
        print(f"  mutate returned {await add.mutate('write docs')}")
        await refetched(client, todos)

        print("3. adding 'buy milk' again: the server says no")
        try:
            await add.mutate("buy milk")
        except ValueError as error:
            print(f"  mutate raised ValueError: {error}")
        await refetched(client, todos)
        print(f"4. the list: {client.get_query_data(TODOS)}")


if __name__ == "__main__":
    trio.run(main)
