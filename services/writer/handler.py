"""The writer's batch handler: one Kafka batch of commands of a partition -> API calls ->
one CommandResult per command (plus dead-letter copies), committed by the processor in one
transaction with the consumed offsets.

Steps: decode (malformed -> exsf.deadletter); check tenant and enrolment (unknown tenant
after a registry reload, a user not enrolled in the command's tenant, or an id that
another tenant's link holds (link_owners.py) -> `failed` + dead-letter, and no request to
any API); group into per-link waves (grouping.py); apply
each wave's groups concurrently; stop at the first wave that met throttling and return
`retry_from` at the first unapplied command of each input partition, so the processor
commits what is done and pauses the partition for the Retry-After.

Which creates "might be retries" (looked up by link id before creating; only Graph needs
this, Salesforce upserts are idempotent):
- commands below the *suspect horizon* of their topic-partition: on assignment the horizon
  is the log end at that moment (whatever was already there may have been applied by the
  previous owner, which crashed before committing); after an aborted transaction it is
  raised past the aborted batch. Commands produced after we took the partition are below
  no horizon, so steady state makes no lookups.
- a command_id this process answered recently is answered again from the result cache,
  without any API call (redelivery after a rollback, duplicates in one batch, commands
  behind a throttled one that were applied before the batch stopped).
- within the appliers, any attempt after a transient failure (its answer may have been lost).
A lookup can only miss a create the previous owner still has in flight at Graph; the new
owner gets the partition after the old one's session timed out (seconds), by which time
such a request has long finished. Events are guarded by transactionId as well.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from services.core.bus.base import Bus, Message, TopicPartition
from services.core.deadletter import deadletter_record
from services.core.envelopes import Command, EnvelopeError, decode_command, encode
from services.core.metrics import COMMANDS, DEADLETTERS, THROTTLED
from services.core.processor import BatchOutcome, Output, PoisonMessage
from services.core.tenants import Tenant
from services.core.topics import Topics, tenant_key
from services.writer.cache import ResultCache
from services.writer.config import WriterSettings
from services.writer.directory import TenantDirectory
from services.writer.email_apply import EmailApplier
from services.writer.exchange_apply import ExchangeApplier
from services.writer.grouping import GroupKey, Item, waves
from services.writer.link_owners import LinkOwners
from services.writer.outcome import Done, Later, Outcome, failed
from services.writer.salesforce_apply import SalesforceApplier

log = structlog.get_logger(__name__)

SERVICE = "writer"
UNKNOWN_END = 2**62  # "every offset might have been applied already"
ASSIGN_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str


class WriterHandler:
    def __init__(self, bus: Bus, topics: Topics, directory: TenantDirectory, settings: WriterSettings,
                 owners: LinkOwners | None = None) -> None:
        self.bus = bus
        self.owners = owners
        self.topics = topics
        self.directory = directory
        self.settings = settings
        self.cache = ResultCache(settings.result_cache_size, settings.result_cache_ttl_s)
        self.exchange = ExchangeApplier(directory, settings)
        self.salesforce = SalesforceApplier(directory, settings)
        self.email = EmailApplier(directory, settings, self.salesforce)
        # partition -> {input tp: offsets below this might have been applied already}
        self._horizon: dict[int, dict[TopicPartition, int]] = {}
        self._inflight: dict[int, dict[TopicPartition, int]] = {}
        self._assigned: dict[int, asyncio.Event] = {}
        self.backoffs = 0  # batches that stopped early for throttling

    # --- partition lifecycle -------------------------------------------------------------
    def _tps(self, partition: int) -> list[TopicPartition]:
        return [TopicPartition(self.topics.commands_exchange, partition),
                TopicPartition(self.topics.commands_salesforce, partition)]

    def _ready(self, partition: int) -> asyncio.Event:
        return self._assigned.setdefault(partition, asyncio.Event())

    async def assigned(self, partition: int) -> None:
        try:
            self._horizon[partition] = await self.bus.end_offsets(self._tps(partition))
            log.info("writer.partition_horizon", partition=partition,
                     horizon={str(tp): off for tp, off in self._horizon[partition].items()})
        except Exception as exc:
            # Without the log end, everything read before the first commit is suspect.
            log.warning("writer.end_offsets_failed", partition=partition, error=type(exc).__name__)
            self._horizon[partition] = dict.fromkeys(self._tps(partition), UNKNOWN_END)
        finally:
            self._ready(partition).set()

    async def revoked(self, partition: int) -> None:
        self._horizon.pop(partition, None)
        self._inflight.pop(partition, None)
        self._assigned.pop(partition, None)

    async def _horizon_of(self, partition: int, messages: list[Message]) -> dict[TopicPartition, int]:
        """The partition's suspect horizon, once `assigned` has computed it. The processor
        may hand us a batch while its assignment callback (which runs in the consumer's
        rebalance task) is still awaiting `assigned`: wait for it rather than treat a
        previous owner's leftovers as fresh commands."""
        ready = self._ready(partition)
        if not ready.is_set():
            try:
                await asyncio.wait_for(ready.wait(), ASSIGN_WAIT_S)
            except TimeoutError:
                log.warning("writer.assignment_not_ready", partition=partition)
                return {m.tp: UNKNOWN_END for m in messages}
        return self._horizon.get(partition, {})

    async def committed(self, partition: int) -> None:
        done = self._inflight.pop(partition, None) or {}
        horizon = self._horizon.get(partition, {})
        for tp, end in done.items():
            if horizon.get(tp) == UNKNOWN_END:
                # The log end was unknown at assignment: a previous owner's unfinished batch
                # (at most max_batch commands) is all that can lie beyond our first commit.
                horizon[tp] = end + self.settings.max_batch

    async def aborted(self, partition: int) -> None:
        horizon = self._horizon.setdefault(partition, {})
        for tp, end in self._inflight.pop(partition, {}).items():
            horizon[tp] = max(horizon.get(tp, 0), end)

    async def handle(self, partition: int, message: Message) -> list[Output]:
        raise PoisonMessage("the writer handles whole batches (handle_batch)")

    # --- the batch -------------------------------------------------------------------------
    async def handle_batch(self, partition: int, messages: list[Message]) -> BatchOutcome:
        inflight: dict[TopicPartition, int] = {}
        for m in messages:
            inflight[m.tp] = max(inflight.get(m.tp, 0), m.offset + 1)
        self._inflight[partition] = inflight
        horizon = await self._horizon_of(partition, messages)

        outcomes: dict[int, Outcome | Malformed] = {}
        commands: dict[int, Command] = {}
        for i, m in enumerate(messages):
            try:
                commands[i] = decode_command(m.value or b"")
            except EnvelopeError as exc:
                outcomes[i] = Malformed(str(exc))
        tenants = await self._tenants(commands, outcomes)
        items = [Item(i, c) for i, c in commands.items() if i not in outcomes]
        suspect = {it.index for it in items if messages[it.index].offset < horizon.get(messages[it.index].tp, 0)}
        if suspect:
            log.info("writer.possible_redelivery", partition=partition, commands=len(suspect),
                     horizon={str(tp): off for tp, off in horizon.items()})

        later: list[Later] = []
        for wave in waves(items):
            results = await asyncio.gather(*(self._group(key, group, tenants[key.tenant_id], suspect)
                                             for key, group in wave.items()))
            for got in results:
                for i, o in got.items():
                    outcomes[i] = o
                    if isinstance(o, Done) and o.result.status != "failed":
                        self.cache.put(o.result)
                    elif isinstance(o, Later):
                        later.append(o)
            if later:
                break  # later waves may hold the next command of a throttled link
        return self._outcome(messages, commands, outcomes, later)

    async def _tenants(self, commands: dict[int, Command], outcomes: dict[int, Outcome | Malformed]
                       ) -> dict[str, Tenant]:
        """Tenant of each command; refuse what names an unknown tenant or a user that is not
        enrolled there (nothing of such a command ever reaches an API)."""
        known: dict[str, Tenant | None] = {}
        for i, cmd in commands.items():
            if cmd.tenant_id not in known:
                known[cmd.tenant_id] = await self.directory.tenant(cmd.tenant_id)
            tenant = known[cmd.tenant_id]
            if tenant is None:
                outcomes[i] = failed(cmd, f"unknown tenant {cmd.tenant_id!r}")
            elif tenant.user_by_mailbox(cmd.user) is None:
                outcomes[i] = failed(cmd, f"user {cmd.user!r} is not enrolled in tenant {cmd.tenant_id!r}")
            elif cmd.entity == "email" and (cmd.target != "salesforce" or cmd.action != "create"):
                outcomes[i] = failed(cmd, "emails are only created on Salesforce")
            elif (foreign := self._foreign_id(cmd)) is not None:
                outcomes[i] = failed(cmd, f"{foreign} belongs to another tenant's link")
        return {tid: t for tid, t in known.items() if t is not None}

    def _foreign_id(self, cmd: Command) -> str | None:
        """The first id the command would touch that another tenant's link holds: its
        target, the message an email task copies, the contact it is linked to."""
        if self.owners is None:
            return None
        named = [(cmd.target, cmd.target_id, "target id")]
        if cmd.entity == "email":
            named += [("exchange", cmd.context.message_id, "message id"),
                      ("salesforce", cmd.context.who_id, "who_id")]
        for side, item_id, what in named:
            if not isinstance(item_id, str) or not item_id:
                continue
            owner = self.owners.owner(side, item_id)
            if owner is not None and owner != cmd.tenant_id:
                log.error("writer.foreign_target_refused", tenant_id=cmd.tenant_id, owner_tenant=owner, side=side,
                          item_id=item_id, link_id=cmd.link_id, command_id=cmd.command_id)
                return f"{what} {item_id!r}"
        return None

    async def _group(self, key: GroupKey, group: list[Item], tenant: Tenant, suspect: set[int]) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
        todo: list[Item] = []
        for it in group:
            cached = self.cache.get(it.command.command_id)
            if cached is not None:
                out[it.index] = Done(cached)
            else:
                todo.append(it)
        if not todo:
            return out
        try:
            if key.target == "exchange":
                out.update(await self.exchange.apply(tenant, key.user, key.entity, key.action, todo, suspect))
            elif key.entity == "email":
                out.update(await self.email.apply(tenant, todo, suspect))
            else:
                out.update(await self.salesforce.apply(tenant, key.entity, key.action, todo, suspect))
        except Exception as exc:  # a bug must not stall the partition: report and dead-letter
            log.exception("writer.group_failed", target=key.target, entity=key.entity, action=key.action)
            for it in todo:
                out.setdefault(it.index, failed(it.command, f"{type(exc).__name__}: {exc}"))
        return out

    def _outcome(self, messages: list[Message], commands: dict[int, Command],
                 outcomes: dict[int, Outcome | Malformed], later: list[Later]) -> BatchOutcome:
        retry_from: dict[TopicPartition, int] = {}
        for i, m in enumerate(messages):
            if not isinstance(outcomes.get(i), Done | Malformed):
                retry_from[m.tp] = min(retry_from.get(m.tp, m.offset), m.offset)
        outputs: list[Output] = []
        for i, m in enumerate(messages):
            if m.tp in retry_from and m.offset >= retry_from[m.tp]:
                continue
            o = outcomes[i]
            if isinstance(o, Malformed):
                DEADLETTERS.labels(SERVICE, "malformed").inc()
                outputs.append(Output(self.topics.deadletter, deadletter_record(SERVICE, o.reason, m), m.key))
                continue
            assert isinstance(o, Done)
            cmd = commands[i]
            key = tenant_key(cmd.tenant_id)
            COMMANDS.labels(SERVICE, cmd.target, cmd.action, o.result.status).inc()
            outputs.append(Output(self.topics.results, encode(o.result), key))
            if o.deadletter is not None:
                DEADLETTERS.labels(SERVICE, "failed").inc()
                log.warning("writer.command_failed", tenant_id=cmd.tenant_id, target=cmd.target, entity=cmd.entity,
                            action=cmd.action, link_id=cmd.link_id, error=o.deadletter)
                outputs.append(Output(self.topics.deadletter,
                                      deadletter_record(SERVICE, o.deadletter, m, tenant_id=cmd.tenant_id), key))
        if not retry_from:
            return BatchOutcome(outputs)
        self.backoffs += 1
        for _ in later:
            THROTTLED.labels("writer").inc()
        backoff = max((x.backoff_s for x in later), default=self.settings.throttle_default_s)
        reason = later[0].reason if later else "unapplied commands"
        return BatchOutcome(outputs, retry_from=retry_from, backoff_s=backoff, reason=reason)
