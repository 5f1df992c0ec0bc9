"""Copy everything from one storage backend to another, any two (plugins too).

Idempotent: nodes are created or reconfigured, affiliations, subscriptions
and accounts upserted, items re-put under their ids oldest first (so order
survives), and items the target has beyond the source's are removed. Run it
twice, or again after an interruption, and the target ends up the same.
At the end the counts are compared, node by node.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from xep207.storage.interface import AccountExists, NodeExists


@dataclass
class Counts:
    accounts: int = 0
    nodes: int = 0
    items: int = 0
    subscriptions: int = 0
    affiliations: int = 0
    mismatches: list[str] = field(default_factory=list)


class Progress:
    """A one-line progress bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.done = 0

    def step(self, label: str) -> None:
        self.done += 1
        filled = self.width * self.done // self.total
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line[:150])
            if self.done == self.total:
                self.stream.write("\n")
        elif self.done == self.total or self.done % 100 == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


async def copy_storage(source, target, progress_stream=sys.stderr) -> Counts:
    counts = Counts()
    accounts = await source.list_accounts()
    nodes = await source.list_all_nodes()
    progress = Progress(len(accounts) + len(nodes), progress_stream)

    for jid in accounts:
        account = await source.get_account(jid)
        try:
            await target.create_account(account)
        except AccountExists:
            await target.update_account(account)
        counts.accounts += 1
        progress.step(jid)

    for service, node_id in nodes:
        node = await source.get_node(service, node_id)
        try:
            await target.create_node(node)
        except NodeExists:
            await target.set_node_config(service, node_id, node.config)
        affiliations = await source.get_affiliations(service, node_id)
        for entity, affiliation in affiliations.items():
            await target.set_affiliation(service, node_id, entity, affiliation)
        for entity in set(await target.get_affiliations(service, node_id)) - set(affiliations):
            await target.set_affiliation(service, node_id, entity, "none")
        subscriptions = await source.get_subscriptions(service, node_id)
        for subscription in subscriptions:
            await target.set_subscription(subscription)
        wanted = {s.subscriber for s in subscriptions}
        for stale in await target.get_subscriptions(service, node_id):
            if stale.subscriber not in wanted:
                await target.remove_subscription(service, node_id, stale.subscriber)
        page = await source.page_items(service, node_id)
        for item in page.items:
            await target.put_item(service, node_id, item, None)
        extra = {i.item_id for i in (await target.page_items(service, node_id)).items} - \
            {i.item_id for i in page.items}
        if extra:
            await target.delete_items(service, node_id, sorted(extra))
        counts.nodes += 1
        counts.items += len(page.items)
        counts.subscriptions += len(subscriptions)
        counts.affiliations += len(affiliations)
        progress.step(f"{service} {node_id}")

    await verify(source, target, counts)
    return counts


async def verify(source, target, counts: Counts) -> None:
    """Compare what the target holds with the source, node by node."""
    if await source.list_accounts() != await target.list_accounts():
        counts.mismatches.append("accounts differ")
    for service, node_id in await source.list_all_nodes():
        checks = {
            "items": [i.item_id for i in (await source.page_items(service, node_id)).items] ==
                     [i.item_id for i in (await target.page_items(service, node_id)).items],
            "subscriptions": sorted(s.subscriber for s in await source.get_subscriptions(service, node_id)) ==
                             sorted(s.subscriber for s in await target.get_subscriptions(service, node_id)),
            "affiliations": await source.get_affiliations(service, node_id) ==
                            await target.get_affiliations(service, node_id),
            "configuration": (await source.get_node(service, node_id)).config ==
                             (await target.get_node(service, node_id)).config,
        }
        counts.mismatches.extend(f"{service} {node_id}: {what} differ" for what, same in checks.items() if not same)
