from .build import write

for path in write():
    print(f"wrote {path}")
