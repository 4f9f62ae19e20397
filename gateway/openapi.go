package gateway

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// OpenAPI is the API's OpenAPI 3 document, served at GET /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// GET /openapi.yaml: no API key needed, so a client generator or a newcomer
// can read it from the running gateway.
func serveOpenAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/yaml")
	return c.Send(OpenAPI)
}
