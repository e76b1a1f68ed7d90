"""XEP-0352 classification of what an inactive client is sent (xes.stanza.csi)."""

from xes.stanza.csi import classify

EVENT = "http://jabber.org/protocol/pubsub#event"


def pep(node: str) -> bytes:
    return (
        f"<message from='a@x' type='headline' id='1'><event xmlns='{EVENT}'>"
        f"<items node='{node}'><item id='1'/></items></event></message>"
    ).encode()


def test_presence_folds_by_sender() -> None:
    a = classify(b"<presence from='a@x/1' to='b@x'><show>away</show></presence>")
    b = classify(b"<presence from='a@x/1' to='b@x'/>")
    c = classify(b"<presence from='c@x/1' to='b@x'/>")
    assert a == b and a[0] is False and a[1] != c[1]


def test_subscription_request_is_urgent() -> None:
    assert classify(b"<presence from='a@x' to='b@x' type='subscribe'/>") == (True, None)


def test_messages() -> None:
    assert classify(b"<message from='a@x/1' type='chat'><body>hi</body></message>")[0]
    assert classify(b"<message from='a@x/1'><request xmlns='urn:xmpp:receipts'/></message>")[0]
    assert classify(b"<message from='a@x/1' type='error'/>")[0]
    state = b"<composing xmlns='http://jabber.org/protocol/chatstates'/>"
    cs = classify(b"<message from='a@x/1' type='chat'>" + state + b"</message>")
    assert cs == (False, b"c\x00a@x/1")
    assert classify(pep("urn:xmpp:avatar:metadata")) == (
        False,
        b"e\x00a@x\x00urn:xmpp:avatar:metadata\x001",
    )
    marker = b"<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>"
    assert classify(b"<message from='a@x/1'>" + marker + b"</message>") == (False, None)


def test_iq_is_urgent() -> None:
    assert classify(b"<iq type='result' id='1'/>") == (True, None)


def test_omemo_device_list_notification_is_not_urgent() -> None:
    assert classify(pep("eu.siacs.conversations.axolotl.devicelist"))[0] is False


def test_encrypted_message_without_body_is_urgent() -> None:
    omemo = b"<encrypted xmlns='urn:xmpp:omemo:2'/>"
    assert classify(b"<message from='a@x/1' type='chat'>" + omemo + b"</message>")[0]


def test_pep_items_fold_per_item_and_retractions_are_kept() -> None:
    def event(inner: str) -> bytes:
        return (
            f"<message from='a@x' type='headline'><event xmlns='{EVENT}'>{inner}</event></message>"
        ).encode()

    room1 = classify(event("<items node='urn:xmpp:bookmarks:1'><item id='r1'/></items>"))
    room2 = classify(event("<items node='urn:xmpp:bookmarks:1'><item id='r2'/></items>"))
    assert room1[1] != room2[1]
    retract = event("<items node='urn:xmpp:bookmarks:1'><retract id='r1'/></items>")
    assert classify(retract) == (False, None)
    assert classify(event("<purge node='n'/>")) == (False, None)
