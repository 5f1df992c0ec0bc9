"""XEP-0133 service administration over XEP-0050 ad-hoc commands, by an
account named with --admin; anyone else is refused."""

from twisted.internet import reactor

from tests.doors_helpers import DoorsTestCase, error_of
from tests.server_helpers import DOMAIN, PASSWORD, ServerTestCase

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
NS_DATA = "jabber:x:data"
CAROL = f"carol@{DOMAIN}"


def command(name: str, action: str = "execute", session: str | None = None, fields: dict | None = None) -> str:
    session_attribute = f" sessionid='{session}'" if session else ""
    form = ""
    if fields is not None:
        values = "".join(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in
                                                          (value if isinstance(value, list) else [value]))
                         + "</field>" for var, value in fields.items())
        form = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS_ADMIN}</value></field>{values}</x>")
    return (f"<command xmlns='{NS_COMMANDS}' node='{NS_ADMIN}#{name}' action='{action}'{session_attribute}>"
            f"{form}</command>")


def field_value(reply, var: str) -> str:
    form = next(reply.command.elements(NS_DATA, "x"))
    field = next(f for f in form.elements(NS_DATA, "field") if f.getAttribute("var") == var)
    return str(next(field.elements(NS_DATA, "value")))


class ServiceAdministration(DoorsTestCase):
    server_args = DoorsTestCase.server_args + ("--admin", f"alice@{DOMAIN}")
    users = ("alice", "bob")

    async def run_command(self, client, name: str, fields: dict):
        """execute, then submit the form with ``complete``."""
        first = await self.iq(client, "set", DOMAIN, command(name))
        self.assertEqual(first.command["status"], "executing", first.toXml())
        self.assertIsNotNone(next(first.command.elements(NS_DATA, "x")))
        return await self.iq(client, "set", DOMAIN,
                             command(name, "complete", first.command["sessionid"], fields))

    async def test_admin_adds_changes_counts_and_deletes(self):
        alice = await self.online("alice", "desk")
        items = await self.iq(alice, "get", DOMAIN,
                              f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS_COMMANDS}'/>")
        nodes = {i["node"] for i in items.query.elements()}
        for name in ("add-user", "delete-user", "change-user-password", "get-online-users-num"):
            self.assertIn(f"{NS_ADMIN}#{name}", nodes)

        added = await self.run_command(alice, "add-user", {"accountjid": CAROL, "password": "carols-password",
                                                           "password-verify": "carols-password"})
        self.assertEqual(added.command["status"], "completed", added.toXml())
        carol = await self.connect()
        await carol.login("carol", "carols-password", resource="r")
        count = await self.iq(alice, "set", DOMAIN, command("get-online-users-num"))
        self.assertEqual((count.command["status"], field_value(count, "onlineusersnum")), ("completed", "2"))

        changed = await self.run_command(alice, "change-user-password",
                                         {"accountjid": CAROL, "password": "carols-new-password"})
        self.assertEqual(changed.command["status"], "completed", changed.toXml())
        self.assertIn(b"<reset", await carol.closed.addTimeout(10, reactor))
        carol = await self.connect()
        await carol.login("carol", "carols-new-password", resource="r")

        bob = await self.online("bob", "desk")
        carol.send("<presence/>")
        bob.send(f"<presence to='{CAROL}' type='subscribe'/>")
        await carol.wait_for(lambda e: e.name == "presence" and e.getAttribute("type") == "subscribe")
        carol.send(f"<presence to='bob@{DOMAIN}' type='subscribed'/>")
        await self.settle(carol)
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{CAROL}/r")
        deleted = await self.run_command(alice, "delete-user", {"accountjids": [CAROL]})
        self.assertEqual(deleted.command["status"], "completed", deleted.toXml())
        self.assertIn(b"<not-authorized", await carol.closed.addTimeout(10, reactor))
        await bob.wait_for(lambda e: e.name == "presence" and e.getAttribute("from") == f"{CAROL}/r"
                           and e.getAttribute("type") == "unavailable")
        self.assertIsNone(await self.server.storage.get_account(CAROL))
        again = await self.run_command(alice, "delete-user", {"accountjids": [CAROL]})
        self.assertEqual(error_of(again)[0], "item-not-found")

    async def test_non_admin_is_forbidden_and_sees_no_commands(self):
        alice = await self.online("alice", "desk")
        bob = await self.online("bob", "desk")
        items = await self.iq(bob, "get", DOMAIN,
                              f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS_COMMANDS}'/>")
        self.assertEqual(list(items.query.elements()), [])
        for name in ("add-user", "delete-user", "change-user-password", "get-online-users-num"):
            reply = await self.iq(bob, "set", DOMAIN, command(name))
            self.assertEqual(error_of(reply)[0], "forbidden", name)
        reply = await self.iq(bob, "set", DOMAIN, command("delete-user", "complete", fields={"accountjids": [
            f"alice@{DOMAIN}"]}))
        self.assertEqual(error_of(reply)[0], "forbidden")
        # alice's open session is hers alone.
        first = await self.iq(alice, "set", DOMAIN, command("delete-user"))
        stolen = await self.iq(bob, "set", DOMAIN, command("delete-user", "complete", first.command["sessionid"],
                                                          {"accountjids": [f"alice@{DOMAIN}"]}))
        self.assertEqual(error_of(stolen)[0], "forbidden")
        self.assertIsNotNone(await self.server.storage.get_account(f"alice@{DOMAIN}"))

    async def test_bad_sessions_forms_and_cancel(self):
        alice = await self.online("alice", "desk")
        reply = await self.iq(alice, "set", DOMAIN, command("add-user", "complete", "nosuchsession", {}))
        self.assertEqual(error_of(reply)[0], "bad-request")
        self.assertIn("bad-sessionid", reply.toXml())
        reply = await self.iq(alice, "set", DOMAIN, command("no-such-command"))
        self.assertEqual(error_of(reply)[0], "item-not-found")
        first = await self.iq(alice, "set", DOMAIN, command("add-user"))
        session = first.command["sessionid"]
        mismatch = await self.iq(alice, "set", DOMAIN, command(
            "add-user", "complete", session, {"accountjid": CAROL, "password": "one-password",
                                              "password-verify": "another-password"}))
        self.assertEqual(error_of(mismatch)[0], "not-acceptable")
        first = await self.iq(alice, "set", DOMAIN, command("add-user"))
        canceled = await self.iq(alice, "set", DOMAIN, command("add-user", "cancel", first.command["sessionid"]))
        self.assertEqual(canceled.command["status"], "canceled")
        late = await self.iq(alice, "set", DOMAIN, command(
            "add-user", "complete", first.command["sessionid"],
            {"accountjid": CAROL, "password": "carols-password", "password-verify": "carols-password"}))
        self.assertIn("bad-sessionid", late.toXml())
        missing = await self.run_command(alice, "change-user-password", {"accountjid": CAROL})
        self.assertEqual(error_of(missing)[0], "bad-request")
        self.assertIsNone(await self.server.storage.get_account(CAROL))


class WithSlixmpp(ServerTestCase):
    """slixmpp's xep_0050 and xep_0133 plugins, over STARTTLS with SCRAM."""

    server_args = ("--admin", f"alice@{DOMAIN}")

    async def test_admin_commands(self):
        await self.start_server()
        report = await self.run_client("admin_scenario.py", "127.0.0.1", self.port, DOMAIN, PASSWORD)
        self.assertIn("add-user", report["commands"])
        self.assertEqual(report["form_fields"], ["FORM_TYPE", "accountjid", "password", "password-verify"])
        self.assertEqual((report["add_user"], report["online"], report["bob"]), ("completed", "3", "forbidden"))
