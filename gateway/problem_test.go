package gateway

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
)

func TestAListLimitIsAWholeNumberInItsRange(t *testing.T) {
	app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
	app.Get("/", func(c *fiber.Ctx) error {
		n, err := queryLimit(c, 20, 100)
		if err != nil {
			return err
		}
		return c.JSON(n)
	})
	for q, want := range map[string]int{"": 20, "?limit=1": 1, "?limit=100": 100, "?limit=0": 400, "?limit=101": 400,
		"?limit=-3": 400, "?limit=ten": 400, "?limit=5.5": 400} {
		resp, err := app.Test(httptest.NewRequest("GET", "/"+q, nil))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if want == 400 {
			var p struct{ Type, Detail string }
			if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" ||
				json.Unmarshal(body, &p) != nil || p.Type != "/problems/bad-query" || p.Detail != "limit must be a whole number from 1 to 100" {
				t.Errorf("%q: %d %s %s", q, resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			continue
		}
		var got int
		if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || got != want {
			t.Errorf("%q: %d %s, want %d", q, resp.StatusCode, body, want)
		}
	}
}
