// An OpenID Provider for the suite and for trying the ledger with one: the certified
// oidc-provider (pinned by package-lock.json), configured as a council's provider would be
// for the ledger. Its access tokens are JWTs for one audience (the ledger), signed with the
// keys in $JWKS (private JWKs; the first of $ALG signs), carrying the caller's ledger claims
// from $DIRECTORY:
//   {"people": {"<sub>": {"roles": [...], "pilot": "...", "team": "...", "username": "..."}},

//    "clients": {"<client_id>": {"secret": "...", "roles": [...], "pilot": "..."}},
//    "web": {"client_id": "...", "secret": "...", "redirect_uri": "..."}}
// People sign in by the authorization code flow (the web client), case systems by client
// credentials. Signing in is not what is tested: GET /interaction/<uid>?login=<sub> signs
// <sub> in and grants the ledger's scope at once.
//   PORT=... ISSUER=http://127.0.0.1:PORT AUDIENCE=... ALG=ES256 JWKS=keys.json \
//     DIRECTORY=directory.json node provider.mjs
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider, { errors } from 'oidc-provider';

const { PORT, ISSUER, AUDIENCE, ALG, JWKS, DIRECTORY } = process.env;
const jwks = JSON.parse(readFileSync(JWKS, 'utf8'));
const directory = JSON.parse(readFileSync(DIRECTORY, 'utf8'));

const claimsOf = (token) => {
  const found = token.accountId
    ? directory.people[token.accountId]
    : directory.clients[token.clientId];
  if (!found) return undefined;
  const { roles, pilot, team, username } = found;
  return Object.fromEntries(
    Object.entries({ roles, pilot, team, preferred_username: username })
      .filter(([, value]) => value !== undefined),
  );
};

const provider = new Provider(ISSUER, {
  jwks,
  clients: [
    ...Object.entries(directory.clients).map(([id, client]) => ({
      client_id: id,
      client_secret: client.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      id_token_signed_response_alg: ALG,
    })),
    {
      client_id: directory.web.client_id,
      client_secret: directory.web.secret,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [directory.web.redirect_uri],
      id_token_signed_response_alg: ALG,
    },
  ],
  findAccount: (_ctx, sub) => (directory.people[sub]
    ? { accountId: sub, claims: () => ({ sub }) }
    : undefined),
  scopes: ['openid', 'ledger'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== AUDIENCE) throw new errors.InvalidTarget();
        return {
          scope: 'ledger',
          audience: AUDIENCE,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: ALG } },
        };
      },
    },
  },
  extraTokenClaims: (_ctx, token) => claimsOf(token),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});

// Sign in and consent in one step, as the directory's person named by ?login=.
const interaction = async (req, res) => {
  const details = await provider.interactionDetails(req, res);
  const accountId = new URL(req.url, ISSUER).searchParams.get('login');
  if (!directory.people[accountId]) {
    res.writeHead(403).end('unknown person');
    return;
  }
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope('openid ledger');
  grant.addResourceScope(AUDIENCE, 'ledger');
  const grantId = await grant.save();
  await provider.interactionFinished(
    req,
    res,
    { login: { accountId }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
};

const handle = provider.callback();
createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => res.writeHead(400).end(String(error)));
    return;
  }
  handle(req, res);
}).listen(Number(PORT), '127.0.0.1', () => console.log(`listening on ${ISSUER}`));
