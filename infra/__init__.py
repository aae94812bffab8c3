"""The memstack Pulumi program: config model, components and policy pack."""
