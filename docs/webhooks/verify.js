const crypto = require("crypto");
// headers: the request's headers (lower-case names, as Node gives them); body: the raw Buffer or string received.
function verifyWebhook(secret, headers, body, toleranceSeconds = 300) {
  const id = headers["webhook-id"], timestamp = headers["webhook-timestamp"] || "";
  if (!id || !/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) {
    return false;
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const mac = crypto.createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body).digest("base64");
  const expected = Buffer.from("v1," + mac);
  return (headers["webhook-signature"] || "").split(" ").some((sig) => {
    const candidate = Buffer.from(sig);
    return candidate.length === expected.length && crypto.timingSafeEqual(candidate, expected);
  });
}
