// Swagger UI over this server's /openapi.json. The packaged Swagger UI (4.x) renders OpenAPI 3.0 only: the
// document (3.1, from pydantic's JSON Schemas) is shown under a 3.0 version string, which it renders the same.
// Calls made with "Try it out" carry the key of this tab (#key=…), unless one is set with "Authorize".
import { BASE, storedKey } from "./api.js";

const response = await fetch(`${BASE}/openapi.json`);
const spec = await response.json();
spec.openapi = "3.0.3";
spec.servers = [{ url: `${location.origin}${BASE}` }];
window.ui = window.SwaggerUIBundle({
  spec,
  dom_id: "#swagger",
  deepLinking: true,
  validatorUrl: null,  // no badge from validator.swagger.io: nothing leaves this server
  requestInterceptor: (request) => {
    const key = storedKey();
    if (key && !request.headers.Authorization) request.headers.Authorization = `Bearer ${key}`;
    return request;
  },
});
document.body.dataset.ready = "docs";
