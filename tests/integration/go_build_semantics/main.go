// Answers, for tests/integration/test_build_go_semantics.py, what Go's path/filepath.Match and
// moby's patternmatcher (the .dockerignore matcher the docker CLI uses) say about the cases it
// reads as JSON on stdin. Built in GOPATH mode against Debian's packages.
package main

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher"
)

type input struct {
	Match  [][2]string `json:"match"`
	Ignore []struct {
		Patterns []string `json:"patterns"`
		Paths    []string `json:"paths"`
	} `json:"ignore"`
}

type result struct {
	Match  []*bool   `json:"match"`  // nil: ErrBadPattern
	Ignore [][]*bool `json:"ignore"` // nil list: New refused the patterns
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	var out result
	for _, c := range in.Match {
		ok, err := filepath.Match(c[0], c[1])
		if err != nil {
			out.Match = append(out.Match, nil)
		} else {
			out.Match = append(out.Match, &ok)
		}
	}
	for _, c := range in.Ignore {
		pm, err := patternmatcher.New(c.Patterns)
		if err != nil {
			out.Ignore = append(out.Ignore, nil)
			continue
		}
		answers := []*bool{}
		for _, p := range c.Paths {
			answers = append(answers, matches(pm, p))
		}
		out.Ignore = append(out.Ignore, answers)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}

// matches is nil for an error. A pattern whose regexp does not compile errs on its first use
// and, in patternmatcher 0.5.0, panics on the next (nil regexp): both are "the pattern is bad".
func matches(pm *patternmatcher.PatternMatcher, path string) (answer *bool) {
	defer func() {
		if recover() != nil {
			answer = nil
		}
	}()
	ok, err := pm.MatchesOrParentMatches(path)
	if err != nil {
		return nil
	}
	return &ok
}
