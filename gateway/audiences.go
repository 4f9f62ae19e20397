package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/audiences"
)

// POST /v1/audiences: a CSV of recipients, as a multipart form's "file"
// field or as a text/csv body. Bad rows are reported by line and skipped.
func (s *Server) uploadAudience(c *fiber.Ctx) error {
	var data io.Reader
	ct := strings.ToLower(c.Get(fiber.HeaderContentType))
	switch {
	case strings.HasPrefix(ct, fiber.MIMEMultipartForm):
		fh, err := c.FormFile("file")
		if err != nil {
			return problem(400, "bad-upload", "send the CSV as the multipart form field \"file\" (curl -F file=@patients.csv)")
		}
		f, err := fh.Open()
		if err != nil {
			return problem(400, "bad-upload", "the uploaded file could not be read")
		}
		defer f.Close()
		data = f
	case strings.HasPrefix(ct, "text/csv"):
		data = bytes.NewReader(c.Body())
	default:
		return problem(415, "unsupported-media-type", "upload the CSV as multipart/form-data (field \"file\") or as a text/csv body")
	}
	region := strings.ToUpper(strings.TrimSpace(c.Query("default_region", s.opts.DefaultRegion)))
	res, err := audiences.ParseCSV(data, audiences.ParseOptions{DefaultRegion: region, MaxBytes: int64(s.opts.MaxUploadBytes)})
	switch {
	case errors.Is(err, audiences.ErrTooLarge):
		return problem(413, "too-large", err.Error())
	case errors.Is(err, audiences.ErrBadOptions):
		return validationProblem([]FieldError{{Field: "default_region", Detail: "is not a region code such as US or CN"}})
	case err != nil:
		return validationProblem([]FieldError{{Field: "file", Detail: err.Error()}})
	}
	if len(res.Recipients) == 0 {
		p := validationProblem([]FieldError{{Field: "file", Detail: fmt.Sprintf("no row holds a recipient (%d rows, %d invalid, %d duplicates); see errors_by_line", res.Rows, res.Invalid, res.Duplicates)}})
		return c.Status(p.Status).JSON(struct {
			*Problem
			ByLine []audiences.RowError `json:"errors_by_line"`
		}{p, res.Errors}, "application/problem+json")
	}
	a, err := s.opts.Audiences.Save(c.UserContext(), tenantOf(c), res)
	if err != nil {
		return s.unavailable(err)
	}
	// The audience (its id, counts and the rows skipped, by line), never
	// its recipients.
	return c.Status(fiber.StatusCreated).JSON(a)
}

// GET /v1/audiences/{id}
func (s *Server) getAudience(c *fiber.Ctx) error {
	a, err := s.opts.Audiences.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, audiences.ErrNotFound) {
		return problem(404, "not-found", "no audience with this id for your API key (audiences expire 7 days after upload)")
	} else if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(a)
}
