// A real OAuth 2.1 authorization server for the OAuth tests (tests/e2e/oauth.rs):
// oidc-provider (pinned in package.json) over HTTPS, the client-credentials grant, resource
// indicators (RFC 8707) with JWT access tokens (RFC 9068) or opaque ones, and token
// introspection (RFC 7662).
//
// Usage: node server.mjs CONFIG.json, where CONFIG holds
//   port, host        where to listen (the issuer is https://host:port)
//   cert, key         the TLS certificate and key files (PEM)
//   resource          the resource indicator tokens are issued for (the MCP server's URI)
//   scopes            the scopes that resource grants, space-separated
//   format            "jwt" or "opaque"
//   signingKeys       [{kid, alg, pem}], PKCS#8 private keys, all published; the first
//                     signs, unless a token request names another in X-Sign-Kid
//   clients           [{client_id, client_secret}]
// Prints "ready ISSUER" once listening. GET /__hits answers how often /jwks, /token and
// /token/introspection were asked, so a test can see the resource server's traffic.
import * as fs from 'node:fs';
import * as https from 'node:https';
import { createPrivateKey } from 'node:crypto';
import { Provider, errors } from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `https://${config.host}:${config.port}`;
const keys = config.signingKeys.map(({ kid, alg, pem }) => ({
  ...createPrivateKey(pem).export({ format: 'jwk' }),
  kid,
  alg,
  use: 'sig',
}));
const signer = (kid) => config.signingKeys.find((k) => k.kid === kid) ?? config.signingKeys[0];

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    // No ID tokens are issued here, but the client's metadata must name an algorithm
    // the key set can sign with.
    id_token_signed_response_alg: config.signingKeys[0].alg,
  })),
  jwks: { keys },
  scopes: ['openid', ...config.scopes.split(' ')],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: async (ctx, indicator) => {
        const { alg, kid } = signer(ctx.get('x-sign-kid'));
        if (indicator !== config.resource) {
          throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        }
        return {
          scope: config.scopes,
          audience: config.resource,
          accessTokenTTL: 300,
          accessTokenFormat: config.format,
          jwt: { sign: { alg, kid } },
        };
      },
    },
  },
});

const hits = { jwks: 0, token: 0, introspection: 0 };
provider.use(async (ctx, next) => {
  if (ctx.path === '/__hits') {
    ctx.body = hits;
    return;
  }
  if (ctx.path === '/jwks') hits.jwks += 1;
  if (ctx.path === '/token') hits.token += 1;
  if (ctx.path === '/token/introspection') hits.introspection += 1;
  await next();
});

const server = https.createServer(
  { cert: fs.readFileSync(config.cert), key: fs.readFileSync(config.key) },
  provider.callback(),
);
server.listen(config.port, config.host, () => console.log(`ready ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
