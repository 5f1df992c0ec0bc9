"""The end-to-end suites a second time, against three processes sharing
PostgreSQL and Redis, each client of a test on a different process
(``tests.cluster_helpers.ClusterMixin``). Modules are imported whole so
that their own classes are not collected again here."""

from __future__ import annotations

import tests.test_blocking as blocking
import tests.test_chat as chat
import tests.test_groupchat as groupchat
import tests.test_presence_roster as presence
import tests.test_server_e2e as e2e
from twisted.trial import unittest

from tests.cluster_helpers import ClusterMixin


class PresenceInCluster(ClusterMixin, presence.XEP0207Presence):
    pass


class SubscriptionsInCluster(ClusterMixin, presence.XEP0207Subscriptions):
    pass


class JoiningInCluster(ClusterMixin, groupchat.Joining):
    pass


class ModerationInCluster(ClusterMixin, groupchat.Moderation):
    pass


class EntryRulesInCluster(ClusterMixin, groupchat.EntryRules):
    pass


class HistoryInCluster(ClusterMixin, groupchat.History):
    pass


class NativeGroupchatInCluster(ClusterMixin, groupchat.NativeGroupchat):
    pass


class ChatRoutingInCluster(ClusterMixin, chat.Routing):
    pass


class OfflineInCluster(ClusterMixin, chat.Offline):
    pass


class ArchiveInCluster(ClusterMixin, chat.Archive):
    pass


class XEP0207MessagingInCluster(ClusterMixin, chat.XEP0207Messaging):
    pass


class LegacyTalksToNativeInCluster(ClusterMixin, chat.LegacyTalksToNative):
    pass


class MixedPresenceInCluster(ClusterMixin, e2e.MixedPresence):
    pass


class BlockingInCluster(ClusterMixin, blocking.Enforcement):
    def test_pep_notifications_stop(self):
        raise unittest.SkipTest("sets another process's session caps in memory (single-process only)")


class BlockCommandInCluster(ClusterMixin, blocking.TheBlockCommand):
    pass
