// A real Express application whose sessions the sessiongate integration tests read:
// express-session with connect-redis (its default JSON serializer) on the node-redis
// client, and Passport, so that `req.session.passport.user` is written exactly as
// Passport writes it.
//
// Configuration (environment):
//   PORT                 listen on 127.0.0.1:PORT (required)
//   REDIS_URL            redis://127.0.0.1:P/0 (required)
//   SESSION_SECRETS      JSON array of secrets, newest first (required); express-session's
//                        `secret` array: the first signs, every one verifies
//   SESSION_PREFIX       connect-redis key prefix (default "sess:")
//   COOKIE_NAME          session cookie name (default "connect.sid")
//   ROLLING              "1": express-session `rolling: true`
//   SESSION_TTL_SECONDS  cookie maxAge and connect-redis ttl (default: no maxAge, so a
//                        browser-session cookie, and connect-redis's 86400 s key TTL)
//
// Endpoints:
//   POST /login   JSON or form {"user": "<id>", "roles": [...], "email": "...",
//                 "extra": {...}}: Passport login (the serialized user is the id: a
//                 string, or an integer when the JSON body gives one), then `roles`,
//                 `email` (default "<id>@example.com") and every entry of `extra` at the
//                 session's top level. 200 {"ok": true} with the Set-Cookie.
//   POST /logout  req.logout, then req.session.destroy (deletes the Redis key). 200.
//   GET  /anon    sets req.session.views without logging in: an anonymous session. 200.
//   GET  /whoami  {"user": <passport user or null>, "roles": ..., "email": ...}.
//
// It prints `listening on 127.0.0.1:PORT` once it is connected to Redis and listening.

"use strict";

const express = require("express");
const session = require("express-session");
const passport = require("passport");
const { RedisStore } = require("connect-redis");
const { createClient } = require("redis");

function required(name) {
  const value = process.env[name];
  if (value === undefined || value === "") {
    console.error(`${name} must be set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required("PORT"));
const redisUrl = required("REDIS_URL");
let secrets;
try {
  secrets = JSON.parse(required("SESSION_SECRETS"));
} catch (e) {
  console.error(`SESSION_SECRETS is not JSON: ${e.message}`);
  process.exit(2);
}
if (!Array.isArray(secrets) || secrets.length === 0 || !secrets.every((s) => typeof s === "string" && s !== "")) {
  console.error("SESSION_SECRETS must be a non-empty JSON array of non-empty strings");
  process.exit(2);
}
const prefix = process.env.SESSION_PREFIX ?? "sess:";
const cookieName = process.env.COOKIE_NAME || "connect.sid";
const rolling = process.env.ROLLING === "1";
const ttlSeconds = process.env.SESSION_TTL_SECONDS ? Number(process.env.SESSION_TTL_SECONDS) : undefined;
if (ttlSeconds !== undefined && !(Number.isInteger(ttlSeconds) && ttlSeconds > 0)) {
  console.error("SESSION_TTL_SECONDS must be a positive integer");
  process.exit(2);
}

// A strategy that trusts the `user` field of the body: the tests log users in by name.
class TrustStrategy extends passport.Strategy {
  constructor() {
    super();
    this.name = "trust";
  }

  authenticate(req) {
    const id = req.body && req.body.user;
    const ok = (typeof id === "string" && id !== "") || Number.isSafeInteger(id);
    if (!ok) {
      return this.fail({ message: "a non-empty string or integer `user` is required" }, 400);
    }
    return this.success({ id });
  }
}

passport.use(new TrustStrategy());
passport.serializeUser((user, done) => done(null, user.id));
passport.deserializeUser((id, done) => done(null, { id }));

function asList(v) {
  if (v === undefined || v === null) return [];
  return Array.isArray(v) ? v : [v];
}

async function main() {
  const client = createClient({ url: redisUrl });
  client.on("error", (err) => console.error(`redis client error: ${err.message}`));
  await client.connect();

  const store = new RedisStore({
    client,
    prefix,
    ...(ttlSeconds !== undefined ? { ttl: ttlSeconds } : {}),
  });

  const app = express();
  app.disable("x-powered-by");
  app.use(express.json());
  app.use(express.urlencoded({ extended: false }));
  app.use(
    session({
      store,
      name: cookieName,
      secret: secrets,
      resave: false,
      saveUninitialized: false,
      rolling,
      cookie: {
        httpOnly: true,
        secure: false,
        path: "/",
        ...(ttlSeconds !== undefined ? { maxAge: ttlSeconds * 1000 } : {}),
      },
    }),
  );
  app.use(passport.session());

  app.post("/login", passport.authenticate("trust"), (req, res) => {
    const body = req.body || {};
    req.session.roles = asList(body.roles);
    req.session.email = typeof body.email === "string" ? body.email : `${req.user.id}@example.com`;
    if (body.extra && typeof body.extra === "object" && !Array.isArray(body.extra)) {
      for (const [k, v] of Object.entries(body.extra)) {
        if (k !== "cookie" && k !== "passport") req.session[k] = v;
      }
    }
    res.json({ ok: true });
  });

  app.post("/logout", (req, res, next) => {
    req.logout((err) => {
      if (err) return next(err);
      req.session.destroy((err2) => {
        if (err2) return next(err2);
        res.clearCookie(cookieName, { path: "/" });
        res.json({ ok: true });
      });
    });
  });

  app.get("/anon", (req, res) => {
    req.session.views = (req.session.views || 0) + 1;
    res.json({ ok: true, views: req.session.views });
  });

  app.get("/whoami", (req, res) => {
    const passportData = req.session.passport;
    res.json({
      user: passportData && passportData.user !== undefined ? passportData.user : null,
      roles: req.session.roles ?? null,
      email: req.session.email ?? null,
    });
  });

  app.use((err, req, res, _next) => {
    console.error(err && err.stack ? err.stack : String(err));
    res.status(500).json({ error: String(err && err.message ? err.message : err) });
  });

  // Express 5 calls the listen callback on an error too (server.once("error", done)):
  // the ready line is printed only when the socket is bound.
  const failed = (err) => {
    console.error(`listen failed: ${err.code || ""} ${err.message}`);
    process.exit(3);
  };
  const server = app.listen(port, "127.0.0.1", (err) => {
    if (err) {
      failed(err);
      return;
    }
    console.log(`listening on 127.0.0.1:${port}`);
  });
  server.on("error", failed);

  const stop = () => {
    server.close();
    client.quit().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(`startup failed: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
