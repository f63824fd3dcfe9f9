def greet(name, greeting="Hi"):
    return f"{greeting}, {name}!"
