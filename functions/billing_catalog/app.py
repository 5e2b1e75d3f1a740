"""Billing catalog API: /v1/customers, /v1/products, /v1/prices."""

from billing import customers, prices, products
from metering import api
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/customers")
def create_customer():
    return api.ok(customers.create(api.principal(app), api.params(app)))


@app.get("/v1/customers")
def list_customers():
    return api.ok(customers.list_customers(api.principal(app), api.params(app)))


@app.get("/v1/customers/<customer_id>")
def retrieve_customer(customer_id: str):
    return api.ok(customers.retrieve(api.principal(app), customer_id, api.params(app)))


@app.post("/v1/customers/<customer_id>")
def update_customer(customer_id: str):
    return api.ok(customers.update(api.principal(app), customer_id, api.params(app)))


@app.delete("/v1/customers/<customer_id>")
def delete_customer(customer_id: str):
    return api.ok(customers.delete(api.principal(app), customer_id, api.params(app)))


@app.post("/v1/products")
def create_product():
    return api.ok(products.create(api.principal(app), api.params(app)))


@app.get("/v1/products")
def list_products():
    return api.ok(products.list_products(api.principal(app), api.params(app)))


@app.get("/v1/products/<product_id>")
def retrieve_product(product_id: str):
    return api.ok(products.retrieve(api.principal(app), product_id, api.params(app)))


@app.post("/v1/prices")
def create_price():
    return api.ok(prices.create(api.principal(app), api.params(app)))


@app.get("/v1/prices")
def list_prices():
    return api.ok(prices.list_prices(api.principal(app), api.params(app)))


@app.get("/v1/prices/<price_id>")
def retrieve_price(price_id: str):
    return api.ok(prices.retrieve(api.principal(app), price_id, api.params(app)))


@app.post("/v1/prices/<price_id>")
def update_price(price_id: str):
    return api.ok(prices.update(api.principal(app), price_id, api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
