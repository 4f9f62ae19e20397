package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// decodeJSON is the one decoder of every JSON request body: it refuses a
// body that is not declared application/json (415), and one that is empty,
// not UTF-8, not one JSON object (null, an array, a second value after it)
// or has a field dst does not know (400). Every refusal is a problem whose
// detail says what to send instead.
func decodeJSON(c *fiber.Ctx, dst any) *Problem {
	body, p := jsonBody(c)
	if p != nil {
		return p
	}
	return decodeStrict(body, dst)
}

// decodeOptionalJSON is decodeJSON for routes whose body may be left out:
// an empty body leaves dst as it is.
func decodeOptionalJSON(c *fiber.Ctx, dst any) *Problem {
	if len(bytes.TrimSpace(c.Body())) == 0 {
		return nil
	}
	return decodeJSON(c, dst)
}

// jsonBody is the request body once its Content-Type and its bytes are
// those of a JSON object (see checkJSONObject).
func jsonBody(c *fiber.Ctx) ([]byte, *Problem) {
	mt, _, _ := strings.Cut(c.Get(fiber.HeaderContentType), ";")
	if !strings.EqualFold(strings.TrimSpace(mt), fiber.MIMEApplicationJSON) {
		return nil, problem(415, "unsupported-media-type", "send JSON with 'Content-Type: application/json'")
	}
	body := c.Body()
	if p := checkJSONObject(body); p != nil {
		return nil, p
	}
	return body, nil
}

// checkJSONObject refuses a body that is empty, not UTF-8 (encoding/json
// would turn bad bytes into U+FFFD and send them to patients), or does not
// start as a JSON object (null would decode as "nothing given").
func checkJSONObject(body []byte) *Problem {
	trimmed := bytes.TrimSpace(body)
	switch {
	case len(trimmed) == 0:
		return problem(400, "malformed-json", "the request body is empty; send a JSON object")
	case !utf8.Valid(body):
		return problem(400, "malformed-json", "the request body is not valid UTF-8")
	case trimmed[0] != '{':
		return problem(400, "malformed-json", "the body must be a JSON object, not "+jsonKind(trimmed[0]))
	}
	return nil
}

func jsonKind(first byte) string {
	switch first {
	case 'n':
		return "null"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	}
	return "a number or other value"
}

// decodeStrict decodes one JSON object with no unknown fields (the body
// has passed checkJSONObject).
func decodeStrict(body []byte, v any) *Problem {
	if p := checkJSONObject(body); p != nil {
		return p
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem(400, "malformed-json", "the request body has data after the JSON object")
	}
	return nil
}
