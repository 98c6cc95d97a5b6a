package agent

import "testing"

func TestServiceVersion(t *testing.T) {
	cases := map[string]string{
		"":                       "0.0.0-dev",
		"dev":                    "0.0.0-dev",
		"v1.2.3":                 "1.2.3",
		"1.2.3-rc.1+build.5":     "1.2.3-rc.1+build.5",
		"a1b2c3d":                "0.0.0-a1b2c3d",
		"a1b2c3d-dirty":          "0.0.0-a1b2c3d-dirty",
		"v1.2.3-4-ga1b2c3d":      "1.2.3-4-ga1b2c3d",
		"v1.2-4-ga1b2c3d-dirty":  "0.0.0-v1-2-4-ga1b2c3d-dirty",
		"weird/version with sp.": "0.0.0-weird-version-with-sp-",
	}
	for in, want := range cases {
		got := serviceVersion(in)
		if got != want || !semver.MatchString(got) {
			t.Errorf("serviceVersion(%q) = %q, want %q (valid SemVer)", in, got, want)
		}
	}
}
