// XEP-0198 resumption inside SASL2 with xmpp.js: log in (password, Bind2 with stream
// management, a FAST token), lose the TCP connection, let xmpp.js reconnect: it authenticates
// with the token and resumes in the same <authenticate/>. Prints JSON lines; the message the
// test sends while the connection is down must arrive exactly once.
// Usage: node sasl2_resume.mjs PORT DOMAIN USER PASSWORD
import { client, xml } from "@xmpp/client";

const [port, domain, username, password] = process.argv.slice(2);
let token = null;
const xmpp = client({
  service: `xmpp://127.0.0.1:${port}`,
  domain,
  username,
  password,
  resource: "phone",
  userAgent: xml("user-agent", { id: "0f5b7a52-resume-test" }),
});
xmpp.fast.saveToken = async (t) => { token = t; };
xmpp.fast.fetchToken = async () => token;
xmpp.on("error", () => {});
const bodies = [];
xmpp.on("stanza", (el) => {
  if (el.is("message") && el.getChildText("body")) bodies.push(el.getChildText("body"));
});
let resumedEvents = 0;
xmpp.streamManagement.on("resumed", () => { resumedEvents += 1; });
const say = (o) => console.log(JSON.stringify(o));

const timeout = (ms) => new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), ms));
try {
  const address = await Promise.race([xmpp.start(), timeout(15000)]);
  say({ step: "online", jid: address.toString(), sm: xmpp.streamManagement.enabled, id: xmpp.streamManagement.id });
  // Wait for the test to tell us (on stdin) that it cut us and sent a message.
  xmpp.socket.socket.destroy();
  say({ step: "cut" });
  await new Promise((resolve) => process.stdin.once("data", resolve));
  const deadline = Date.now() + 15000;
  while ((resumedEvents === 0 || bodies.length === 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 1000)); // a duplicate would arrive meanwhile
  say({ step: "after", resumed: resumedEvents, bodies, jid: xmpp.jid?.toString() });
  await xmpp.stop();
} catch (err) {
  say({ step: "failed", error: String(err) });
}
process.exit(0);
