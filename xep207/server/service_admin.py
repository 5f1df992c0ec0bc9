"""XEP-0133 service administration, as XEP-0050 ad-hoc commands on the server JID.

Only the accounts named by ``--admin`` (``admins = [...]``) see or run them;
anyone else is ``forbidden``. Each command is one form: ``execute`` answers
the form (status ``executing``), submitting it (``complete``, or ``execute``
with the form) runs it through ``AccountControl`` — the same code as the
admin socket and XEP-0077 — and ``cancel`` drops it. Commands that take no
input (the counts) complete at once with their result form.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable

from twisted.internet import defer
from twisted.python import log
from twisted.words.protocols.jabber import jid as jidlib
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xep207 import logs
from xep207.server import accounts

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
MAX_SESSIONS = 100  # open command sessions kept, oldest dropped first


@dataclass(frozen=True)
class Command:
    name: str
    label: str
    fields: tuple[data_form.Field, ...]  # what the form asks; empty: runs at once
    run: Callable[[dict[str, list[str]]], Awaitable[data_form.Form | str]]

    @property
    def node(self) -> str:
        return f"{NS_ADMIN}#{self.name}"


def _field(kind: str, var: str, label: str) -> data_form.Field:
    return data_form.Field(kind, var=var, label=label, required=True)


def _result(var: str, label: str, value: str) -> data_form.Form:
    return data_form.Form("result", formNamespace=NS_ADMIN,
                          fields=[data_form.Field("text-single", var=var, label=label, value=value)])


def _condition(error: accounts.AccountError) -> str:
    text = str(error)
    if text.startswith("no account"):
        return "item-not-found"
    if "exists" in text:
        return "conflict"
    return "not-acceptable"


@implementer(disco.IDisco)
class ServiceAdmin(XMPPHandler):
    def __init__(self, server, admins):
        super().__init__()
        self.server = server
        self.control = server.accounts
        self.admins = {accounts.normalize(admin, server.domain).userhost() for admin in admins}
        self.sessions: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (requestor, node)
        self.commands = {c.node: c for c in (
            Command("add-user", "Add a User",
                    (_field("jid-single", "accountjid", "The Jabber ID for the account to be added"),
                     _field("text-private", "password", "The password for this account"),
                     _field("text-private", "password-verify", "Retype password")), self._add_user),
            Command("delete-user", "Delete a User",
                    (_field("jid-multi", "accountjids", "The Jabber ID(s) to delete"),), self._delete_users),
            Command("change-user-password", "Change User Password",
                    (_field("jid-single", "accountjid", "The Jabber ID for this account"),
                     _field("text-private", "password", "The new password for this account")),
                    self._change_password),
            Command("end-user-session", "End User Session",
                    (_field("jid-multi", "accountjids", "The Jabber ID(s) whose sessions end"),), self._end_sessions),
            Command("get-online-users-num", "Get Number of Online Users", (), self._online_count),
            Command("get-registered-users-num", "Get Number of Registered Users", (), self._registered_count),
        )}

    def connectionInitialized(self):
        self.xmlstream.addObserver(f"/iq[@type='set']/command[@xmlns='{NS_COMMANDS}']", self._on_command)

    def is_admin(self, requestor) -> bool:
        return requestor.userhost() in self.admins

    # XEP-0030 ---------------------------------------------------------------------

    def _ours(self, target) -> bool:
        return target.user is None and target.resource is None and target.host == self.server.domain

    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if not self._ours(target):
            return []
        if not nodeIdentifier:
            return [disco.DiscoFeature(NS_COMMANDS)]
        if nodeIdentifier in self.commands and self.is_admin(requestor):
            return [disco.DiscoIdentity("automation", "command-node", self.commands[nodeIdentifier].label),
                    disco.DiscoFeature(NS_COMMANDS), disco.DiscoFeature(data_form.NS_X_DATA)]
        return []

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        if not self._ours(target) or nodeIdentifier != NS_COMMANDS or not self.is_admin(requestor):
            return []
        return [disco.DiscoItem(target, command.node, command.label) for command in self.commands.values()]

    # XEP-0050 ---------------------------------------------------------------------

    def _on_command(self, iq) -> None:
        if iq.__dict__.get("handled", False) or iq.getAttribute("to") != self.server.domain:
            return
        iq.handled = True
        d = defer.ensureDeferred(self._execute(iq))
        d.addCallback(self.send)
        d.addErrback(self._failed, iq)

    def _failed(self, failure, iq) -> None:
        if failure.check(StanzaError):
            self.send(failure.value.toResponse(iq))
            return
        logs.failure(failure, "ad-hoc command failed")
        self.send(StanzaError("internal-server-error").toResponse(iq))

    async def _execute(self, iq) -> domish.Element:
        requestor = jidlib.JID(iq["from"])
        request = iq.command
        command = self.commands.get(request.getAttribute("node", ""))
        if not self.is_admin(requestor):
            raise StanzaError("forbidden", text="service administration is for the server's admins")
        if command is None:
            raise StanzaError("item-not-found", text="no such command")
        action = request.getAttribute("action", "execute")
        if action not in ("execute", "complete", "cancel", "next", "prev"):
            raise _bad_action()
        session_id = request.getAttribute("sessionid")
        if session_id is not None:
            if self.sessions.get(session_id) != (requestor.full(), command.node):
                raise _bad_session()
            if action == "cancel":
                del self.sessions[session_id]
                return _reply(iq, command, session_id, "canceled")
        elif action == "cancel":
            raise _bad_session()
        try:
            form = _submitted_form(request)
        except data_form.Error as exc:  # a field twice, a field without var: the client's error
            raise StanzaError("bad-request", text=f"malformed form: {exc}")
        if command.fields and (form is None or form.formType != "submit"):
            if session_id is not None:
                raise StanzaError("bad-request", text="submit the form")
            session_id = uuid.uuid4().hex
            self.sessions[session_id] = (requestor.full(), command.node)
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            reply = _reply(iq, command, session_id, "executing")
            actions = reply.command.addElement("actions")
            actions["execute"] = "complete"
            actions.addElement("complete")
            reply.command.addChild(data_form.Form("form", title=command.label, formNamespace=NS_ADMIN,
                                                  fields=[_copy(f) for f in command.fields]).toElement())
            return reply
        if session_id is not None:
            del self.sessions[session_id]
        values = {name: [str(v) for v in field.values]
                  for name, field in (form.fields.items() if form is not None else ())}
        missing = [f.var for f in command.fields if not any(values.get(f.var or "", []))]
        if missing:
            raise StanzaError("bad-request", text=f"required: {', '.join(str(m) for m in missing)}")
        try:
            outcome = await command.run(values)
        except accounts.AccountError as exc:
            raise StanzaError(_condition(exc), text=str(exc))
        reply = _reply(iq, command, session_id or uuid.uuid4().hex, "completed")
        if isinstance(outcome, data_form.Form):
            reply.command.addChild(outcome.toElement())
        else:
            reply.command.addElement("note", content=outcome)["type"] = "info"
        log.msg(f"{requestor.userhost()} ran {command.name}")
        return reply

    # The commands --------------------------------------------------------------------

    async def _add_user(self, values):
        password = values["password"][0]
        if values["password-verify"][0] != password:
            raise accounts.AccountError("the passwords differ")
        return f"created {await self.control.add_user(values['accountjid'][0], password)}"

    async def _delete_users(self, values):
        # All valid before any goes (each once: "alice, ALICE" is one account).
        targets = list(dict.fromkeys(self.control.jid(jid) for jid in values["accountjids"]))
        for target in targets:  # and all there: an error answer means nothing was deleted
            if await self.server.engine.storage.get_account(target) is None:
                raise accounts.AccountError(f"no account {target}")
        for target in targets:
            await self.control.delete_user(target)
        return f"deleted {', '.join(targets)}"

    async def _change_password(self, values):
        await self.control.change_password(values["accountjid"][0], values["password"][0])
        return "password changed; the account's sessions were ended"

    async def _end_sessions(self, values):
        ended = sum(self.control.kick(jid) for jid in values["accountjids"])
        return f"ended {ended} sessions"

    async def _online_count(self, values):
        return _result("onlineusersnum", "The number of online users", str(len(self.control.online_users())))

    async def _registered_count(self, values):
        return _result("registeredusersnum", "The number of registered users",
                       str(len(await self.control.list_users())))


def _submitted_form(command: domish.Element) -> data_form.Form | None:
    """The admin form, or a form without FORM_TYPE (some clients drop the hidden field)."""
    form = data_form.findForm(command, NS_ADMIN)
    if form is not None:
        return form
    for element in command.elements(data_form.NS_X_DATA, "x"):
        candidate = data_form.Form.fromElement(element)
        if candidate.formNamespace is None:
            return candidate
    return None


def _copy(field: data_form.Field) -> data_form.Field:
    """A fresh field per form (wokkel's Form adopts the objects it is given)."""
    return data_form.Field(field.fieldType, var=field.var, label=field.label, required=field.required)


def _reply(iq, command: Command, session_id: str, status: str) -> domish.Element:
    reply = xmlstream.toResponse(iq, "result")
    element = reply.addElement((NS_COMMANDS, "command"))
    element["node"] = command.node
    element["sessionid"] = session_id
    element["status"] = status
    return reply


def _specific(condition: str, specific: str, text: str) -> StanzaError:
    error = StanzaError(condition, text=text)
    error.appCondition = domish.Element((NS_COMMANDS, specific))
    return error


def _bad_action() -> StanzaError:
    return _specific("bad-request", "malformed-action", "unknown action")


def _bad_session() -> StanzaError:
    return _specific("bad-request", "bad-sessionid", "no such session of yours")


def install(server, options) -> ServiceAdmin:
    from xep207.startup import StartupError

    try:
        handler = ServiceAdmin(server, options.get("admins", ()))
    except accounts.AccountError as exc:
        raise StartupError(f"--admin: {exc}") from None
    server.accounts.reserved |= handler.admins  # not for in-band registration
    handler.setHandlerParent(server.local)
    return handler
