// Compiled (not run) by `npm test`: the published .d.ts files are usable from a strict TypeScript app.
import { Tributary, NotFound, type Customer, type EventAccepted } from "../dist/index.js";
const t = new Tributary("trb_x", { baseUrl: "http://x", sync: true, onError: (e, m) => console.log(e.code, m.length) });
async function f(): Promise<void> {
  const r: EventAccepted | null = await t.identify("a@b.co", { params: { plan: "pro", seats: 3 }, paramsUnset: ["x"] });
  for await (const c of t.customers.list({ status: "paid", params: { seats: 3 } })) {
    const cc: Customer = c;
    console.log(cc.projects["default"]?.status, r);
  }
  try { await t.customers.get("x"); } catch (e) { if (e instanceof NotFound) console.log(e.status); }
  await t.flush();
}
void f();
