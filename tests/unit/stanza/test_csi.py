"""XEP-0352 classification of what an inactive client is sent (xes.stanza.csi)."""

from xes.stanza.csi import classify


def test_presence_folds_by_sender():
    a = classify(b"<presence from='a@x/1' to='b@x'><show>away</show></presence>")
    b = classify(b"<presence from='a@x/1' to='b@x'/>")
    c = classify(b"<presence from='c@x/1' to='b@x'/>")
    assert a == b and a[0] is False and a[1] != c[1]


def test_subscription_request_is_urgent():
    assert classify(b"<presence from='a@x' to='b@x' type='subscribe'/>") == (True, None)


def test_messages():
    assert classify(b"<message from='a@x/1' type='chat'><body>hi</body></message>")[0]
    assert classify(b"<message from='a@x/1'><request xmlns='urn:xmpp:receipts'/></message>")[0]
    assert classify(b"<message from='a@x/1' type='error'/>")[0]
    cs = classify(
        b"<message from='a@x/1' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert cs[0] is False and cs[1] == b"c\x00a@x/1"
    pep = classify(
        b"<message from='a@x' type='headline' id='1'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'><item id='1'/></items></event></message>"
    )
    assert pep == (False, b"e\x00a@x\x00urn:xmpp:avatar:metadata")
    marker = classify(
        b"<message from='a@x/1'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>"
    )
    assert marker == (False, None)


def test_iq_is_urgent():
    assert classify(b"<iq type='result' id='1'/>") == (True, None)


def test_omemo_device_list_notification_is_not_urgent():
    data = b"<message from='a@x' type='headline' id='1'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='eu.siacs.conversations.axolotl.devicelist'><item id='current'/></items></event></message>"
    assert classify(data)[0] is False


def test_encrypted_message_without_body_is_urgent():
    assert classify(
        b"<message from='a@x/1' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>"
    )[0]
