// Independent interop check: openid-client (panva), a certified OAuth/OpenID client, gets a
// DPoP-bound token from latchkey with the client-credentials grant and calls an API guarded by
// latchkey-guard (or latchkey's admin API) with its own DPoP proofs. Prints JSON: the token
// response (without the token), the token's claims, and the API's answers; exits non-zero with
// the reason otherwise.
//
// Usage: node openid_client_dpop.mjs ISSUER CLIENT_ID SCOPE RESOURCE API_URL
// The client secret is read from the environment variable CLIENT_SECRET.
import * as client from 'openid-client'

const [issuer, clientId, scope, resource, apiUrl] = process.argv.slice(2)
const config = await client.discovery(
  new URL(issuer),
  clientId,
  undefined,
  client.ClientSecretBasic(process.env.CLIENT_SECRET),
  // The test server listens on plain http on loopback.
  { execute: [client.allowInsecureRequests], algorithm: 'oauth2' },
)
const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'))
const tokens = await client.clientCredentialsGrant(config, { scope, resource }, { DPoP: dpop })
const claims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'))
const answers = []
for (let i = 0; i < 2; i++) {
  // Each call carries a fresh proof bound to the token (ath) and the request (htm, htu).
  const response = await client.fetchProtectedResource(
    config, tokens.access_token, new URL(apiUrl), 'GET', undefined, undefined, { DPoP: dpop },
  )
  answers.push({ status: response.status, body: await response.text() })
}
const { access_token: _, ...response } = tokens
console.log(JSON.stringify({ response, claims, answers }))
