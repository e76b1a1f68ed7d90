// An xmpp.js client the integration tests drive over stdin/stdout, one JSON object per line.
// Usage: node driver.mjs SERVICE DOMAIN USER PASSWORD RESOURCE
//   SERVICE: xmpp://127.0.0.1:5222, ws://127.0.0.1:5280/xmpp-websocket, wss://...
// Commands (stdin): {"op":"send","to":J,"body":B,"id":I}  {"op":"mam","with":J}
//   {"op":"cut"} (drop the transport without closing the stream; xmpp.js reconnects and
//   resumes)  {"op":"stop"}
// Events (stdout): {"ev":"online",jid,sm,id}  {"ev":"message",from,body,id,stanza_id}
//   {"ev":"mam",items:[{from,body}]}  {"ev":"resumed"}  {"ev":"cut"}  {"ev":"error",error}
//   {"ev":"stopped"}
import { client, xml } from "@xmpp/client";
import { say, serveCommands } from "./commands.mjs";

const [service, domain, username, password, resource] = process.argv.slice(2);
const xmpp = client({ service, domain, username, password, resource });
xmpp.on("error", (err) => say({ ev: "error", error: String(err) }));
xmpp.streamManagement.on("resumed", () => say({ ev: "resumed" }));
xmpp.on("stanza", (el) => {
  if (!el.is("message")) return;
  const result = el.getChild("result", "urn:xmpp:mam:2");
  if (result) {
    const fwd = result.getChild("forwarded", "urn:xmpp:forward:0");
    const msg = fwd?.getChild("message");
    mamItems.push({ from: msg?.attrs.from, body: msg?.getChildText("body") });
    return;
  }
  const body = el.getChildText("body");
  if (body === null) return;
  const sid = el.getChild("stanza-id", "urn:xmpp:sid:0");
  say({ ev: "message", from: el.attrs.from, body, id: el.attrs.id, stanza_id: sid?.attrs.id });
});
let mamItems = [];

async function command(cmd) {
  if (cmd.op === "send") {
    await xmpp.send(
      xml("message", { to: cmd.to, type: "chat", id: cmd.id }, xml("body", {}, cmd.body)),
    );
  } else if (cmd.op === "mam") {
    mamItems = [];
    const form = xml(
      "x",
      { xmlns: "jabber:x:data", type: "submit" },
      xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, "urn:xmpp:mam:2")),
      xml("field", { var: "with" }, xml("value", {}, cmd.with)),
    );
    await xmpp.iqCaller.set(xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "q1" }, form));
    say({ ev: "mam", items: mamItems });
  } else if (cmd.op === "cut") {
    const sock = xmpp.socket.socket;
    if (typeof sock.destroy === "function") sock.destroy();
    else sock.close();
    say({ ev: "cut" });
  } else if (cmd.op === "stop") {
    await xmpp.stop();
    say({ ev: "stopped" });
    process.exit(0);
  }
}

try {
  const address = await Promise.race([
    xmpp.start(),
    new Promise((_, reject) => setTimeout(() => reject(new Error("login timeout")), 20000)),
  ]);
  await xmpp.send(xml("presence")); // available: messages to the bare JID reach us
  say({
    ev: "online",
    jid: address.toString(),
    sm: xmpp.streamManagement.enabled,
    id: xmpp.streamManagement.id,
  });
} catch (err) {
  say({ ev: "error", error: String(err) });
  process.exit(1);
}
serveCommands(command);
