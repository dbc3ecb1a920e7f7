package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cnvrg/capsule/alert"
)

// Webhooks resolves the worker's webhooks and the sources' own, reading
// the URLs of urlEnv and webhookEnv with lookup (os.LookupEnv: the
// worker's environment). It names the setting at fault.
func (c *Config) Webhooks(lookup func(string) (string, bool)) ([]alert.Hook, error) {
	var hooks []alert.Hook
	resolve := func(setting, keys, url, env string) (string, error) {
		switch {
		case url != "" && env != "":
			return "", fmt.Errorf("%s: give %s, not both", setting, keys)
		case env != "":
			v, ok := lookup(env)
			if !ok || v == "" {
				return "", fmt.Errorf("%s: environment variable %s is not set in the worker's environment", setting, env)
			}
			url = v
		case url == "":
			return "", fmt.Errorf("%s: %s is required", setting, keys)
		}
		if err := alert.CheckURL(url); err != nil {
			return "", fmt.Errorf("%s: %w", setting, err)
		}
		return url, nil
	}
	for i, w := range c.Worker.Webhooks {
		setting := fmt.Sprintf("worker.webhooks[%d]", i)
		url, err := resolve(setting, "url or urlEnv", w.URL, w.URLEnv)
		if err != nil {
			return nil, err
		}
		for _, e := range w.Events {
			if !slices.Contains(alert.Types, e) {
				return nil, fmt.Errorf("%s.events: %q is not one of %s", setting, e, strings.Join(alert.Types, ", "))
			}
		}
		hooks = append(hooks, alert.Hook{URL: url, Events: w.Events})
	}
	for _, name := range c.SourceNames() {
		raw := c.Sources[name]
		u, _ := raw["webhook"].(string)
		env, _ := raw["webhookEnv"].(string)
		if u == "" && env == "" {
			continue
		}
		url, err := resolve("sources."+name, "webhook or webhookEnv", u, env)
		if err != nil {
			return nil, err
		}
		hooks = append(hooks, alert.Hook{URL: url, Sources: []string{name}})
	}
	return hooks, nil
}
