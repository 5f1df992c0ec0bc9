"""Presence subscriptions (RFC 6121 §3) as operations on ``presence`` nodes.

| legacy (user A, contact B)     | node operation                                        |
|--------------------------------|-------------------------------------------------------|
| A: subscribe → B               | A subscribes to B's ``presence`` (pending, authorize) |
| B: subscribed → A              | B approves A's pending subscription (or pre-approves) |
| A: unsubscribe → B             | A unsubscribes                                        |
| B: unsubscribed → A            | B, the owner, removes A's subscription (or denies it) |

Whichever path changed a subscription (these stanzas, or XEP-0060 from a
pubsub-native client), ``on_change`` sends the roster pushes and the
presence stanzas RFC 6121 asks for.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber.error import StanzaError

from xep207.hooks import STANZA, SUBSCRIPTION_CHANGED
from xep207.legacy.delivery import speaks_pubsub
from xep207.legacy.render import Template
from xep207.pubsub.kinds import PRESENCE_NODE, PresenceKind
from xep207.pubsub.kinds.account import REQUEST_EXTENSIONS
from xep207.pubsub.protocol import authorization_answer, parse_authorization_answer
from xep207.pubsub.events import ITEMS, AuthorizationRequest, Event, Recipient
from xep207.storage.records import NONE, PENDING, SUBSCRIBED, VIA_LEGACY, bare


class SubscriptionCapture:
    def __init__(self, router, engine, delivery, roster):
        self.router = router
        self.engine = engine
        self.storage = engine.storage
        self.delivery = delivery
        self.roster = roster
        router.hooks.add(SUBSCRIPTION_CHANGED, self.on_change)
        router.hooks.add(STANZA, self.intercept, stanzas=("message",))

    def intercept(self, stanza):
        """A pubsub-native owner's answer to an authorization request, sent to
        its own bare JID or to the server (docs/architecture.md: both are accepted).
        (A plain call for every other stanza: no coroutine.)"""
        session = stanza.__dict__.get("session")
        if stanza.name != "message" or session is None:
            return False
        if stanza.getAttribute("to", self.router.domain) not in (self.router.domain, session.bare):
            return False  # a message to someone else (every chat message): no form search
        return self._intercept(stanza, session)

    async def _intercept(self, stanza, session) -> bool:
        form = authorization_answer(stanza)
        if form is None:
            return False
        try:
            node_id, subscriber, allow, subid = parse_authorization_answer(form)
            await self.engine.answer_authorization(session.full, session.bare, node_id, subscriber, allow, subid)
        except StanzaError as exc:
            session.send(exc.toResponse(stanza))
        return True

    async def handle(self, session, stanza) -> None:
        kind = stanza["type"]
        try:
            contact = jidlib.JID(stanza["to"]).userhost()
        except jidlib.InvalidFormat:
            self.router.bounce(stanza, "jid-malformed")
            return
        user = session.bare
        if contact.split("@")[-1] != self.router.domain or "@" not in contact:
            # Not one of our accounts (a component, say): deliver as is,
            # not captured again (that recursed without end).
            stanza["to"] = contact
            stanza.session = None
            self.router.route(stanza)
            return
        if contact == user:
            self.router.bounce(stanza, "bad-request", "you always see your own presence")
            return
        if not await self.router.account_exists(contact):
            if kind == "subscribe":
                # RFC 6121 §3.1.3: answer for a contact that does not exist.
                session.send(Template.presence(contact, "unsubscribed").to(session.full))
            return
        if kind == "subscribe":
            await self._subscribe(session, user, contact, stanza)
        else:
            await getattr(self, "_" + kind)(session, user, contact)

    async def _subscribe(self, session, user, contact, stanza):
        existing = await self.storage.get_subscription(contact, PRESENCE_NODE, user)
        if existing is not None and existing.state == SUBSCRIBED:
            # §3.1.3: already approved; the contact's server answers for it.
            session.send(Template.presence(contact, "subscribed").to(session.full))
            return
        if existing is not None:
            # Still pending: remind the contact (§3.1.2 allows a re-send).
            self.delivery.request_authorization(
                AuthorizationRequest(contact, PRESENCE_NODE, existing, (contact,),
                                     node_kind=PresenceKind.name))
            return
        kind = self.engine.kind_of(contact, PRESENCE_NODE)
        try:
            await kind.check_pending(self.engine, user)  # the kind's cap, whichever door
        except StanzaError as exc:
            self.router.bounce(stanza, exc.condition, exc.text)
            return
        entry = await self.roster.entry(contact, user)
        if entry.approved:
            # §3.1.2: the user's roster shows the request pending first, as
            # always; §3.4's pre-approval then answers it at once.
            await self.roster.ensure(user, contact)
            await self.roster.push(user, contact, asking=True)
        # RFC 6121 §3.1.3: the contact gets the request as sent, extensions included.
        # A pre-approval is the presence kind's to use up (either door's request).
        extensions = "".join(c.toXml() for c in stanza.elements())
        subscription = await self.engine.subscribe(
            user, contact, PRESENCE_NODE, user, via=VIA_LEGACY,
            bookkeeping={REQUEST_EXTENSIONS: extensions} if extensions else None)
        if subscription.state == SUBSCRIBED:
            approved = Template.presence(contact, "subscribed")
            for other in self.router.sessions_for(user) or ():
                other.send(approved.to(other.full))
        elif (await self.roster.entry(contact, user)).approved:
            # The contact's 'subscribed' crossed this request: it read no
            # request and stored a pre-approval, as this one read none. Whoever
            # sees the other's write second answers (see _consume_approval).
            await self._consume_approval(contact, user)

    async def _subscribed(self, session, owner, contact):
        subscription = await self.storage.get_subscription(owner, PRESENCE_NODE, contact)
        if subscription is None:
            entry = await self.roster.entry(owner, contact)
            if not entry.approved:
                await self.roster.store(owner, replace(entry, approved=True, listed=True))
                await self.roster.push(owner, contact)
                again = await self.storage.get_subscription(owner, PRESENCE_NODE, contact)
                if again is not None and again.state == PENDING:
                    await self._consume_approval(owner, contact)  # the request crossed it (above)
            return
        if subscription.state == PENDING:
            try:
                await self.engine.answer_authorization(owner, owner, PRESENCE_NODE, contact, True)
            except StanzaError as exc:
                if exc.condition != "unexpected-request":
                    raise
                # Answered meanwhile (her other door, another process): no error
                # for a 'subscribed'; it means what it would mean now.
                await self._subscribed(session, owner, contact)

    async def _consume_approval(self, owner: str, contact: str) -> None:
        """A pre-approval and a request stored at once, each after reading that
        the other was not there: the approval answers the request, as when
        either came first. Both sides may get here; the second finds nothing
        pending, and the flag already cleared."""
        try:
            await self.engine.answer_authorization(owner, owner, PRESENCE_NODE, contact, True)
        except StanzaError as exc:
            if exc.condition != "unexpected-request":
                raise
            return
        entry = await self.roster.entry(owner, contact)
        if entry.approved:
            await self.roster.store(owner, replace(entry, approved=False))
            await self.roster.push(owner, contact)

    async def _unsubscribe(self, session, user, contact):
        existing = await self.storage.get_subscription(contact, PRESENCE_NODE, user)
        if existing is not None:
            await self.engine.unsubscribe(user, contact, PRESENCE_NODE, user)

    async def _unsubscribed(self, session, owner, contact):
        existing = await self.storage.get_subscription(owner, PRESENCE_NODE, contact)
        if existing is None:
            entry = await self.roster.entry(owner, contact)
            if entry.approved:
                await self.roster.store(owner, replace(entry, approved=False))
                await self.roster.push(owner, contact)
            return
        if existing.state == PENDING:
            try:
                await self.engine.answer_authorization(owner, owner, PRESENCE_NODE, contact, False)
            except StanzaError as exc:
                if exc.condition != "unexpected-request":
                    raise
                await self._unsubscribed(session, owner, contact)  # approved meanwhile: cancel it now
        else:
            await self.engine.set_node_subscriptions(owner, owner, PRESENCE_NODE, [(contact, NONE)])

    async def remove_contact(self, user: str, contact: str) -> None:
        """Roster remove (§2.5.2): cancel both directions and forget the item."""
        if await self.storage.get_subscription(contact, PRESENCE_NODE, user) is not None:
            await self.engine.unsubscribe(user, contact, PRESENCE_NODE, user)
        if await self.storage.get_subscription(user, PRESENCE_NODE, contact) is not None:
            await self.engine.set_node_subscriptions(user, user, PRESENCE_NODE, [(contact, NONE)])
        await self.roster.forget(user, contact)
        await self.roster.push(user, contact, remove=True)

    # Consequences, whichever path changed the subscription ----------------------

    def on_change(self, change) -> None:
        subscription = change.subscription
        if subscription.node_id != PRESENCE_NODE or not self.engine.is_pep(subscription.service):
            return
        d = defer.ensureDeferred(self._after_change(change))
        d.addErrback(log.err, "presence subscription follow-up failed")
        self.router.in_flight.track(d)  # a shutdown waits for it, before storage closes

    async def _after_change(self, change) -> None:
        subscription = change.subscription
        owner, subscriber = subscription.service, bare(subscription.subscriber)
        if subscription.state != NONE:
            await self.roster.ensure(subscriber, owner)
        if subscription.state == SUBSCRIBED:
            await self.roster.ensure(owner, subscriber)
        if subscription.state == SUBSCRIBED and change.previous != SUBSCRIBED:
            # §3.1.5: the new subscriber gets the contact's current presence.
            page = await self.storage.page_items(owner, PRESENCE_NODE)
            if page.items:
                self.delivery.deliver(Event(owner, PRESENCE_NODE, ITEMS, items=page.items, replay=True,
                                            node_kind=PresenceKind.name),
                                      [Recipient(subscription.subscriber, subscription)])
        if subscription.state == NONE and change.previous == SUBSCRIBED:
            # §3.2/§3.3: the former subscriber stops seeing the contact.
            for resource in (await self.storage.page_items(owner, PRESENCE_NODE)).items:
                gone = Template.presence(f"{owner}/{resource.item_id}", "unavailable")
                for session in self.router.sessions_for(subscriber) or ():
                    session.send(gone.to(session.full))
        if subscription.state == NONE and bare(change.actor) == subscriber:
            # The subscriber cancelled, through either door: the owner's legacy
            # sessions hear ``unsubscribe`` (§3.3).
            for session in self.router.sessions_for(owner) or ():
                if not speaks_pubsub(session, PRESENCE_NODE):
                    session.send(Template.presence(subscriber, "unsubscribe").to(session.full))
        await self.roster.push(owner, subscriber)
        await self.roster.push(subscriber, owner)
