// The proxy setup of the README ("Many brokers as one", long-polling): each
// broker starts its session ids with a character of its own
// (BROKER_SID_PREFIX), and the proxy sends every request that carries a
// `sid` to the broker that character names; a handshake (no `sid`) goes to
// the next broker in turn. The nginx `map $arg_sid` and HAProxy
// `urlp(sid) -m beg` configurations in the README do the same. WebSocket
// upgrades are relayed too (they carry the `sid` of the polling session).

import http from "node:http";
import net from "node:net";

/**
 * Starts the proxy on 127.0.0.1:<ephemeral> in front of `brokers`, a map of
 * sid prefix -> "http://host:port". Resolves with { url, close() }.
 */
export async function startSidProxy(brokers) {
  const prefixes = Object.keys(brokers);
  let turn = 0;

  /** The broker for a request URL, or null for a sid naming no broker. */
  function route(requestUrl) {
    const sid = new URL(requestUrl, "http://proxy").searchParams.get("sid");
    if (sid) return brokers[sid[0]] ? new URL(brokers[sid[0]]) : null;
    const prefix = prefixes[turn % prefixes.length];
    turn += 1;
    return new URL(brokers[prefix]);
  }

  function unknownSession(res) {
    res.writeHead(400, { "content-type": "application/json" });
    res.end(JSON.stringify({ code: 1, message: "Session ID unknown" }));
  }

  const server = http.createServer((req, res) => {
    const target = route(req.url);
    if (!target) return unknownSession(res);
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });

  server.on("upgrade", (req, socket, head) => {
    const target = route(req.url);
    if (!target) return socket.destroy();
    const upstream = net.connect(Number(target.port), target.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length) upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
    const close = () => {
      socket.destroy();
      upstream.destroy();
    };
    upstream.on("error", close);
    socket.on("error", close);
  });

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
