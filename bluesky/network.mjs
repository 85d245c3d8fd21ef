// A real Bluesky network on this machine for xmimic's tests and demo: the reference
// implementation's PLC directory + PDS + AppView (npm @atproto/dev-env), not a fake.
//
//   DB_POSTGRES_URL=postgresql://... REDIS_HOST=127.0.0.1:PORT \
//     node network.mjs trump.test fan.test xmimic-bot.test
//
// Creates one account per handle (each with a password and an app password), prints ONE
// JSON line on stdout: {"pds", "appview", "plc", "control", "accounts": [{handle, did,
// password, app_password}]}, then serves a small control API on 127.0.0.1 (`control`):
//   POST /process-all                  wait until the AppView indexed every write so far
//   POST /post {handle, text, mention?, reply_to?, created_at?}   -> {uri, cid}
//        mention: a handle; "@handle" in text gets a real mention facet with its DID
//   POST /seed {handle, posts: [{text, created_at?}]}             -> {uris}  (applyWrites)
//   POST /repost {handle, uri}         -> {uri}: that account reposts the post
//   POST /delete {handle, uri}         delete one of that account's records
//   GET  /sessions?did=DID             -> {sessions}: live login sessions of the account
//   GET  /notifications?handle=H       -> the account's notifications (as the AppView serves them)
// Exits cleanly on SIGTERM/SIGINT or when stdin closes (the parent died).
// Postgres and Redis are the caller's (bot/sandbox/bluesky.py starts private ones).
import http from 'node:http'
import { TestNetwork } from '@atproto/dev-env'

const handles = process.argv.slice(2)
const log = (...args) => console.error('[bluesky-network]', ...args)

const schema = 'xmimic' // letters and _ only; each network has its own postgres
const network = await TestNetwork.create({ dbPostgresSchema: schema })

const agents = new Map() // handle -> logged-in AtpAgent
const accounts = []
for (const handle of handles) {
  const agent = network.pds.getAgent()
  const password = `pw-${handle}-${Math.random().toString(36).slice(2)}`
  await agent.createAccount({ email: `${handle}@example.com`, handle, password })
  const appPassword = await agent.com.atproto.server.createAppPassword({ name: 'xmimic' })
  agents.set(handle, agent)
  accounts.push({ handle, did: agent.session.did, password, app_password: appPassword.data.password })
}
await network.processAll()

function agentFor(handle) {
  const agent = agents.get(handle)
  if (!agent) throw Object.assign(new Error(`no account ${handle}`), { status: 404 })
  return agent
}

async function strongRef(agent, uri) {
  const [, , did, collection, rkey] = uri.split('/')
  const res = await agent.com.atproto.repo.getRecord({ repo: did, collection, rkey })
  return { uri: res.data.uri, cid: res.data.cid, value: res.data.value }
}

function mentionFacet(text, handle, did) {
  const needle = `@${handle}`
  const at = text.indexOf(needle)
  if (at < 0) throw Object.assign(new Error(`text does not contain ${needle}`), { status: 400 })
  const byteStart = Buffer.byteLength(text.slice(0, at), 'utf8')
  return {
    index: { byteStart, byteEnd: byteStart + Buffer.byteLength(needle, 'utf8') },
    features: [{ $type: 'app.bsky.richtext.facet#mention', did }],
  }
}

async function resolveDid(handle) {
  const known = accounts.find((a) => a.handle === handle)
  if (known) return known.did
  const res = await network.pds.getAgent().com.atproto.identity.resolveHandle({ handle })
  return res.data.did
}

const routes = {
  'POST /process-all': async () => {
    await network.processAll()
    return { ok: true }
  },
  'POST /post': async (body) => {
    const agent = agentFor(body.handle)
    const record = {
      $type: 'app.bsky.feed.post',
      text: body.text,
      createdAt: body.created_at || new Date().toISOString(),
    }
    if (body.mention) record.facets = [mentionFacet(body.text, body.mention, await resolveDid(body.mention))]
    if (body.reply_to) {
      const parent = await strongRef(agent, body.reply_to)
      const root = parent.value.reply?.root ?? { uri: parent.uri, cid: parent.cid }
      record.reply = { root, parent: { uri: parent.uri, cid: parent.cid } }
    }
    const res = await agent.com.atproto.repo.createRecord({
      repo: agent.session.did, collection: 'app.bsky.feed.post', record,
    })
    return { uri: res.data.uri, cid: res.data.cid }
  },
  'POST /seed': async (body) => {
    const agent = agentFor(body.handle)
    const uris = []
    const posts = body.posts || []
    for (let i = 0; i < posts.length; i += 200) { // the PDS takes at most 200 writes a call
      const writes = posts.slice(i, i + 200).map((p) => ({
        $type: 'com.atproto.repo.applyWrites#create',
        collection: 'app.bsky.feed.post',
        value: { $type: 'app.bsky.feed.post', text: p.text, createdAt: p.created_at || new Date().toISOString() },
      }))
      const res = await agent.com.atproto.repo.applyWrites({ repo: agent.session.did, writes })
      for (const r of res.data.results || []) uris.push(r.uri)
    }
    return { uris }
  },
  'POST /repost': async (body) => {
    const agent = agentFor(body.handle)
    const subject = await strongRef(agent, body.uri)
    const res = await agent.com.atproto.repo.createRecord({
      repo: agent.session.did, collection: 'app.bsky.feed.repost',
      record: { $type: 'app.bsky.feed.repost', subject: { uri: subject.uri, cid: subject.cid }, createdAt: new Date().toISOString() },
    })
    return { uri: res.data.uri, cid: res.data.cid }
  },
  'POST /delete': async (body) => {
    const agent = agentFor(body.handle)
    const [, , did, collection, rkey] = body.uri.split('/')
    await agent.com.atproto.repo.deleteRecord({ repo: did, collection, rkey })
    return { ok: true }
  },
  'GET /sessions': async (_body, query) => {
    // a login adds a refresh-token chain; a refresh rotates within it (old row gets nextId)
    const rows = await network.pds.ctx.accountManager.db.db
      .selectFrom('refresh_token').select(['id', 'nextId'])
      .where('did', '=', query.get('did')).execute()
    return { sessions: rows.filter((r) => !r.nextId).length, tokens: rows.length }
  },
  'GET /notifications': async (_body, query) => {
    const res = await agentFor(query.get('handle')).app.bsky.notification.listNotifications({ limit: 100 })
    return res.data
  },
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1')
  const route = routes[`${req.method} ${url.pathname}`]
  let chunks = ''
  for await (const chunk of req) chunks += chunk
  try {
    if (!route) throw Object.assign(new Error(`no route ${req.method} ${url.pathname}`), { status: 404 })
    const answer = await route(chunks ? JSON.parse(chunks) : {}, url.searchParams)
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(answer))
  } catch (err) {
    res.writeHead(err.status && err.status < 600 ? err.status : 500, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: String(err.message || err).split('\n')[0] }))
  }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

process.stdout.write(JSON.stringify({
  pds: network.pds.url,
  appview: network.bsky.url,
  plc: network.plc.url,
  control: `http://127.0.0.1:${server.address().port}`,
  accounts,
}) + '\n')

let closing = false
async function shutdown(why) {
  if (closing) return
  closing = true
  log(`stopping (${why})`)
  server.close()
  const timer = setTimeout(() => process.exit(0), 10000) // never hang the caller's teardown
  try {
    await network.close()
  } catch (err) {
    log(`close: ${String(err.message || err).split('\n')[0]}`)
  }
  clearTimeout(timer)
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
process.stdin.on('end', () => shutdown('stdin closed'))
process.stdin.on('close', () => shutdown('stdin closed'))
process.stdin.resume()
