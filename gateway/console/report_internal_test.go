package console

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

func TestBothCataloguesNameEveryReportSeriesAndReason(t *testing.T) {
	cats, err := loadCatalogues()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"report.chart_title", "report.chart_desc", "report.chart_x", "report.reached_on"}
	for _, s := range []string{broadcasts.SeriesReached, broadcasts.SeriesAcknowledged, broadcasts.SeriesSafe, broadcasts.SeriesNeedHelp} {
		keys = append(keys, "report.series."+s)
	}
	for _, r := range broadcasts.Reasons {
		keys = append(keys, "report.reason."+r)
	}
	for loc, cat := range cats {
		for _, k := range keys {
			if cat[k] == "" {
				t.Errorf("%s: no text for %q", loc, k)
			}
		}
	}
}

func TestTookIsHoursMinutesAndSeconds(t *testing.T) {
	d := 49*time.Hour + 2*time.Minute + 5*time.Second + 600*time.Millisecond
	if got := (reportData{}).Took(&d); got != "49:02:06" {
		t.Errorf("Took = %q", got)
	}
	if got := (reportData{}).Took(nil); got != "" {
		t.Errorf("Took(nil) = %q", got)
	}
}
